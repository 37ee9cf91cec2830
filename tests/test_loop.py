"""The training loop's bookkeeping: when the loss windows are read, and that every counted step's loss is in
the epoch's state whatever ends the epoch (its end, a stop, an unreadable sample, a non-finite loss)."""

import copy

import pytest
import torch
from torch import nn

from spikedriven.engine.distributed import DistInfo
from spikedriven.engine.loop import EpochState, NonFiniteLossError, StepOptions, StopRequested, train_one_epoch
from spikedriven.errors import DataError

CPU = torch.device("cpu")
BATCH = 4


def make_batches(count: int, nan_at: int = -1) -> list:
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(BATCH, 6, generator=generator), torch.randint(0, 3, (BATCH,), generator=generator))
               for _ in range(count)]
    if nan_at >= 0:
        batches[nan_at][0][0, 0] = float("nan")
    return batches


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(6, 3)


def replayed_losses(batches: list) -> list[float]:
    """Each step's loss, from the same training written out step by step."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for images, target in batches:
        loss = nn.functional.cross_entropy(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # float32 to float64, as the loop's window holds it
    return losses


class Drawn:
    """The batches, counting how many the loop has taken."""

    def __init__(self, batches: list, fail_at: int = -1):
        self.batches, self.fail_at, self.count = batches, fail_at, 0

    def __iter__(self):
        for index, batch in enumerate(self.batches):
            if index == self.fail_at:
                raise DataError(f"sample {index} cannot be read")
            self.count += 1
            yield batch


def train(batches, dist=DistInfo(), sync_every=10, nonfinite="stop", **kwargs):
    model = make_model()
    options = StepOptions(device=CPU, dist=dist, sync_every=sync_every, nonfinite=nonfinite)
    return train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), options,
                           epoch=0, **kwargs)


def test_a_window_is_read_one_sync_point_after_it_was_sent_and_the_epochs_end_reads_the_rest():
    """The host reads a window while the next one trains (on a GPU it never waits for the queued steps)."""
    batches = make_batches(12)
    drawn, reports = Drawn(batches), []
    stats = train(drawn, sync_every=5, on_sync=lambda step, loss, n: reports.append((step, drawn.count, loss, n)))
    losses = replayed_losses(batches)
    assert [(step, seen, n) for step, seen, _, n in reports] == [(5, 10, 20), (10, 12, 20), (12, 12, 8)]
    for (step, _, loss, n), first in zip(reports, (0, 5, 10)):
        assert loss == pytest.approx(sum(losses[first:step]) / (step - first), rel=1e-12)
    assert stats["train_loss"] == pytest.approx(sum(losses) / 12, rel=1e-12) and stats["images"] == 12 * BATCH


def test_a_stop_reads_every_window_before_it_raises():
    batches = make_batches(12)
    drawn = Drawn(batches)
    with pytest.raises(StopRequested) as stop:
        train(drawn, sync_every=5, stop_requested=lambda: drawn.count >= 7)
    losses = replayed_losses(batches)
    assert (stop.value.step, stop.value.images, drawn.count) == (7, 7 * BATCH, 7)
    assert stop.value.loss_sum == pytest.approx(BATCH * sum(losses[:7]), rel=1e-12)


def test_an_unreadable_sample_leaves_the_loss_of_every_counted_step_in_the_state():
    """The trainer saves this state and a resumed epoch reports its mean loss from it: 13 steps taken, 13 steps'
    losses (two windows not yet read at that point: the one sent at step 10 and the one being filled)."""
    batches = make_batches(20)
    state = EpochState()
    with pytest.raises(DataError, match="sample 13"):
        train(Drawn(batches, fail_at=13), sync_every=5, state=state)
    assert (state.step, state.images) == (13, 13 * BATCH)
    assert state.loss_sum == pytest.approx(BATCH * sum(replayed_losses(batches)[:13]), rel=1e-12)


def test_a_nonfinite_loss_is_named_by_its_step_when_its_window_is_read():
    batches = make_batches(20, nan_at=3)
    drawn = Drawn(batches)
    with pytest.raises(NonFiniteLossError, match="epoch 0, step 3;"):
        train(drawn, sync_every=5)
    assert drawn.count == 10  # read at the second sync point: at most two windows later than it happened


def test_a_resumed_epoch_adds_its_steps_to_the_stopped_epochs_state():
    batches = make_batches(12)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = EpochState()
    with pytest.raises(StopRequested):
        train_one_epoch(model, Drawn(batches), optimizer, nn.CrossEntropyLoss(), StepOptions(sync_every=5), epoch=0,
                        state=state, stop_requested=lambda: state.step >= 6)
    resumed = copy.deepcopy(state)
    stats = train_one_epoch(model, batches[6:], optimizer, nn.CrossEntropyLoss(), StepOptions(sync_every=5), epoch=0,
                            state=resumed)
    assert stats["train_loss"] == pytest.approx(sum(replayed_losses(batches)) / 12, rel=1e-12)
    assert (stats["images"], stats["images_this_call"]) == (12 * BATCH, 6 * BATCH)


def _rank_epoch(rank: int, store_path: str, results) -> None:
    """One of two gloo ranks: rank 0 asks to stop after its 3rd step, rank 1 meets a NaN at its step 12."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        info = DistInfo(rank=rank, world=2)
        drawn = Drawn(make_batches(30))
        state = EpochState()
        try:
            train(drawn, sync_every=5, state=state, dist=info, stop_requested=lambda: rank == 0 and drawn.count >= 3)
            results[rank] = ("finished", drawn.count)
        except StopRequested as stop:
            results[rank] = ("stopped", stop.step, stop.images, drawn.count)
        drawn = Drawn(make_batches(30, nan_at=12 if rank == 1 else -1))
        try:
            train(drawn, sync_every=5, dist=info)
        except NonFiniteLossError as e:
            results[rank] += (str(e).split(";")[0], drawn.count)
    finally:
        dist.destroy_process_group()


def test_under_torchrun_every_rank_stops_at_the_same_step_when_one_asks_or_meets_a_nonfinite_loss(tmp_path):
    """The flags travel with the loss window: a stop asked at step 3 is in the window sent at step 5, read by every
    rank at step 10, where all stop together (none is left waiting in a collective)."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_epoch, args=(str(tmp_path / "store"), results), nprocs=2)
        results = dict(results)
    assert results[0] == ("stopped", 10, 10 * BATCH, 10,
                          "the training loss became non-finite at epoch 0, a step of another process", 20)
    assert results[1] == ("stopped", 10, 10 * BATCH, 10, "the training loss became non-finite at epoch 0, step 12", 20)
