"""Checkpoints written on a background thread: what is written, in which order, and what a failure says."""

import errno
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from spikedriven.cli import main
from spikedriven.engine import checkpoint as ckpt_io
from spikedriven.engine import checkpoint_writer
from spikedriven.engine.checkpoint_writer import CheckpointWriter, host_copy
from spikedriven.errors import CheckpointError

from helpers import SMALL, DEMO


def _model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_host_copy_copies_every_tensor_and_keeps_the_containers():
    model, optimizer = _model_and_optimizer()
    payload = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
               "best": {"eval_top1": 50.0, "epoch": 2}, "pair": (torch.ones(2), [torch.zeros(1)])}
    copied = host_copy(payload)
    weight_before = payload["state_dict"]["0.weight"].clone()
    exp_avg_before = payload["optimizer"]["state"][0]["exp_avg"].clone()
    with torch.no_grad():  # the next steps change the model and the optimizer's state in place
        model[0].weight.add_(1.0)
    optimizer.state[model[0].weight]["exp_avg"].add_(1.0)
    payload["pair"][0].add_(1.0)
    assert torch.equal(copied["state_dict"]["0.weight"], weight_before)
    assert torch.equal(copied["optimizer"]["state"][0]["exp_avg"], exp_avg_before)
    assert torch.equal(copied["pair"][0], torch.ones(2)) and isinstance(copied["pair"], tuple)
    assert copied["state_dict"]._metadata == payload["state_dict"]._metadata  # load_state_dict reads versions there
    assert copied["best"] == payload["best"] and copied["best"] is not payload["best"]
    fresh, _ = _model_and_optimizer()
    fresh.load_state_dict(copied["state_dict"])
    assert torch.equal(fresh[0].weight, weight_before)


def test_the_writer_writes_the_payload_as_it_was_when_saved(tmp_path):
    model, optimizer = _model_and_optimizer()
    with CheckpointWriter() as writer:
        writer.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1},
                    tmp_path / "best.pth.tar", tmp_path / "last.pth.tar")
        saved = model[0].weight.detach().clone()
        with torch.no_grad():
            model[0].weight.mul_(0.0)  # at once, while the files may still be being written
    for name in ("best.pth.tar", "last.pth.tar"):
        ckpt = ckpt_io.read_checkpoint(tmp_path / name)
        assert torch.equal(ckpt["state_dict"]["0.weight"], saved) and ckpt["epoch"] == 1
        assert ckpt["format"] == ckpt_io.FORMAT_NAME
    assert not list(tmp_path.glob(".*.tmp"))


def test_saves_are_written_in_order_one_payload_at_a_time(tmp_path, monkeypatch):
    """The second save waits for the first payload's files before it copies its own payload,
    so the host holds one copy of the model and optimiser at most."""
    events, release = [], threading.Event()
    save = ckpt_io.save_checkpoint

    def slow_save(path, payload):
        if payload["epoch"] == 1:
            release.wait(5)
        events.append(f"wrote {Path(path).name} {payload['epoch']}")
        return save(path, payload)

    def recorded_copy(value):
        if isinstance(value, dict) and "epoch" in value:  # the payload, not a value inside it
            events.append(f"copied {value['epoch']}")
        return host_copy(value)

    monkeypatch.setattr(ckpt_io, "save_checkpoint", slow_save)
    monkeypatch.setattr(checkpoint_writer, "host_copy", recorded_copy)
    with CheckpointWriter() as writer:
        writer.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 1}, tmp_path / "best.pth.tar", tmp_path / "last.pth.tar")
        second = threading.Thread(target=writer.save, args=({"state_dict": {"w": torch.ones(1)}, "epoch": 2},
                                                            tmp_path / "last.pth.tar"))
        second.start()
        second.join(0.3)
        assert second.is_alive()  # waiting for the first payload's files
        release.set()
        second.join(5)
    assert events == ["copied 1", "wrote best.pth.tar 1", "wrote last.pth.tar 1", "copied 2", "wrote last.pth.tar 2"]
    assert ckpt_io.read_checkpoint(tmp_path / "last.pth.tar")["epoch"] == 2
    assert ckpt_io.read_checkpoint(tmp_path / "best.pth.tar")["epoch"] == 1


def _disk_full(path, payload):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_is_raised_at_the_next_save_or_wait_as_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_io, "save_checkpoint", _disk_full)
    writer = CheckpointWriter()
    writer.save({"state_dict": {}, "epoch": 1}, tmp_path / "last.pth.tar")
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last\.pth\.tar: No space left on device$"):
        writer.save({"state_dict": {}, "epoch": 2}, tmp_path / "last.pth.tar")
    writer.save({"state_dict": {}, "epoch": 3}, tmp_path / "last.pth.tar")
    with pytest.raises(CheckpointError):
        with writer:
            pass


def test_leaving_on_another_exception_logs_a_failed_write_and_lets_that_exception_go_on(tmp_path, monkeypatch,
                                                                                      warnings_seen):
    monkeypatch.setattr(ckpt_io, "save_checkpoint", _disk_full)
    with pytest.raises(KeyError):
        with CheckpointWriter() as writer:
            writer.save({"state_dict": {}, "epoch": 1}, tmp_path / "last.pth.tar")
            raise KeyError("the run's own failure")
    assert len(warnings_seen()) == 1 and warnings_seen()[0].startswith(
        "a checkpoint write failed as the run stopped: could not write checkpoint")


def test_a_ctrl_c_while_waiting_for_the_writes_is_not_logged_as_a_failed_write(monkeypatch, warnings_seen):
    writer = CheckpointWriter()

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with writer:
            raise KeyError("the run's own failure")
    assert warnings_seen() == []


def test_a_run_writes_its_epoch_checkpoints_on_the_writer_thread_best_first(tmp_path, monkeypatch):
    writes = []
    save = ckpt_io.save_checkpoint

    def recorded(path, payload):
        writes.append((Path(path).name, payload["epoch"], threading.current_thread().name))
        return save(path, payload)

    monkeypatch.setattr(ckpt_io, "save_checkpoint", recorded)
    assert main(["train", "-c", DEMO, *SMALL, "--epochs", "2", "--output", str(tmp_path / "run")]) == 0
    names = [(name, epoch) for name, epoch, _ in writes]
    assert names[0] == ("best.pth.tar", 1) and names[1] == ("last.pth.tar", 1)  # epoch 0 always improves
    assert names[-1] == ("last.pth.tar", 2) and len(names) in (3, 4)
    assert all(thread.startswith("spikedriven-checkpoint") for _, _, thread in writes)
    assert ckpt_io.read_checkpoint(tmp_path / "run" / "last.pth.tar")["epoch"] == 2
    assert (tmp_path / "run" / "results.json").is_file()  # written after the last checkpoint, which it reads


def test_a_run_that_cannot_write_its_checkpoint_stops_with_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ckpt_io, "save_checkpoint", _disk_full)
    code = main(["train", "-c", DEMO, *SMALL, "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: could not write checkpoint" in err and "No space left on device" in err
    assert "Traceback" not in err
