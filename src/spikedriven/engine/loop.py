"""One training epoch and one evaluation pass. No files are written here.

The batches arrive as the model takes them (on the run's device, normalised, in its memory format: ``data``);
whether the model returns logits per time step is the model's own declaration (``per_step_output``)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterable, Optional, Sequence

import torch
from torch import nn

from .distributed import DistInfo, all_reduce_sum
from ..errors import DataError, SpikedrivenError

SINGLE_PROCESS = DistInfo()

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP16_NEEDS_CUDA = ("amp fp16 needs a CUDA GPU: on a CPU, float16 autocast runs about 30x slower than fp32 (measured on "
                   "the digits demo) and gets no loss scaling; use --amp bf16 or none")


class NonFiniteLossError(SpikedrivenError):
    pass


class StopRequested(Exception):
    """Raised between steps after SIGINT / SIGTERM; carries how far the epoch got."""

    def __init__(self, step: int, loss_sum: float, images: int):
        super().__init__(step)
        self.step, self.loss_sum, self.images = step, loss_sum, images


def autocast(device: torch.device, amp: str):
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class TETLoss:
    """TET (Deng et al. 2022) over per-step logits ``[T, B, K]``:
    ``(1 - lamb) mean_t criterion(out_t, y) + lamb MSE(out, means)``; ``lamb = 0`` is the mean alone."""

    def __init__(self, criterion: Callable, means: float = 1.0, lamb: float = 0.0):
        self.criterion, self.means, self.lamb = criterion, means, lamb

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_step = torch.stack([self.criterion(step_logits, target) for step_logits in logits]).mean()
        if not self.lamb:
            return per_step
        regulariser = nn.functional.mse_loss(logits, torch.full_like(logits, self.means))
        return (1 - self.lamb) * per_step + self.lamb * regulariser


class DistillationLoss:
    """DeiT's distillation, as SDT-V2's fine-tune runs it: a model with a distillation head returns, in training,
    its head's logits and the distillation head's; the head learns the labels (``criterion``), the distillation
    head the teacher's predictions on the same images, ``(1 - alpha) label loss + alpha distillation loss``.
    ``hard``: cross-entropy with the teacher's top class; ``soft``: KL divergence of the softmaxes at ``tau``,
    summed, times tau², over the logits' elements. With TET the per-step distillation logits learn it as their mean."""

    def __init__(self, criterion: Callable, teacher: nn.Module, kind: str, alpha: float, tau: float):
        self.criterion, self.teacher, self.kind, self.alpha, self.tau = criterion, teacher, kind, alpha, tau

    def __call__(self, outputs, target: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, tuple):
            raise TypeError("distillation needs the model's two heads' logits: a model built with kd true, in training")
        logits, distilled = outputs
        label_loss = classification_loss(logits, target, self.criterion)
        with torch.no_grad():
            teacher = self.teacher(images)
        if isinstance(self.criterion, TETLoss):  # per-step logits: the distillation head learns their mean
            distilled = distilled.mean(0)
        if self.kind == "hard":
            distillation = nn.functional.cross_entropy(distilled, teacher.argmax(dim=1))
        else:
            t = self.tau
            distillation = nn.functional.kl_div(nn.functional.log_softmax(distilled / t, dim=1),
                                                nn.functional.log_softmax(teacher / t, dim=1),
                                                reduction="sum", log_target=True) * (t * t) / distilled.numel()
        return (1 - self.alpha) * label_loss + self.alpha * distillation


def classification_loss(logits, target: torch.Tensor, loss_fn: Callable, images: Optional[torch.Tensor] = None
                        ) -> torch.Tensor:
    """The step's loss: ``loss_fn(logits, target)`` (a ``TETLoss`` for a model with per-step logits, as the
    recipe pairs them); a distillation loss reads the model's two outputs and the images its teacher sees."""
    if isinstance(loss_fn, DistillationLoss):
        return loss_fn(logits, target, images)
    if isinstance(logits, tuple):
        raise TypeError("the model returns two heads' logits (kd): training it needs a teacher (DistillationLoss)")
    return loss_fn(logits, target)


def per_step_output(model: nn.Module) -> bool:
    """Whether ``model`` returns logits per time step ``[T, B, K]`` (a model built with ``tet``), as the model
    declares it; a compiled or distributed wrapper is looked through."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return bool(getattr(model, "tet", False))
        model = inner


class InFlight:
    """Device values on their way to the host. The copy is queued behind the steps that made them and the host
    waits only when it reads them, a sync point later, by which time the GPU has long finished them: reading at
    once (``.tolist()``) would let the GPU's queue run dry while the host waited, then prepared the next batch."""

    def __init__(self, values: torch.Tensor, steps: list[tuple[int, int]], step: int):
        self.steps, self.step = steps, step  # (batch index, images) of each step in ``values``; the last step + 1
        self.copied: Optional[torch.cuda.Event] = None
        if values.is_cuda:
            self.host = values.to("cpu", non_blocking=True)  # into pinned memory, which a non-blocking copy needs
            self.copied = torch.cuda.Event()
            self.copied.record()
        else:
            self.host = values

    def read(self) -> list[float]:
        if self.copied is not None:
            self.copied.synchronize()
        return self.host.tolist()


@dataclass
class EpochState:
    """Progress inside an epoch, so an interrupted epoch can resume where it stopped."""

    step: int = 0
    loss_sum: float = 0.0
    images: int = 0


@dataclass
class StepOptions:
    """How every training step of a run is taken, the same in each epoch: on which device and ranks, in which
    precision, with which gradient clipping and loss scaling, what a non-finite loss does, and how often the
    host reads the losses (every ``sync_every`` steps and at every multiple of ``log_every``)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dist: DistInfo = SINGLE_PROCESS
    amp: str = "none"
    scaler: Optional[torch.amp.GradScaler] = None
    clip_grad: Optional[float] = None
    nonfinite: str = "stop"
    sync_every: int = 10
    log_every: int = 0
    cuda_graphs: bool = False

    def sync_point_at(self, step: int) -> bool:
        """Every rank reaches the same sync points, and a window never holds more than ``sync_every`` steps."""
        return step % self.sync_every == 0 or bool(self.log_every and step % self.log_every == 0)


class LossWindow:
    """The losses of the steps since the last sync point, on the device, and their way to the host.

    A step adds one copy to the window to the model's own work, not a chain of small bookkeeping kernels (each
    a launch the host pays for: ``benchmarks/step_overhead.py`` counts them). At a sync point the window is
    sent (``InFlight``) with two flags (a non-finite loss, a stop request), agreed on by all ranks under
    torchrun, and read one sync point later, so the host never waits for the GPU to finish the queued steps
    and the GPU never idles while the host prepares the next batch. Reading adds the losses to the epoch's
    ``state`` (in step order, in float64) and reports them through ``on_sync(step, mean loss, images)``."""

    def __init__(self, options: StepOptions, state: EpochState, epoch: int, stop_requested: Callable[[], bool],
                 on_sync: Optional[Callable[[int, float, int], None]] = None):
        self.options, self.state, self.epoch = options, state, epoch
        self.stop_requested, self.on_sync = stop_requested, on_sync
        self.losses = torch.zeros(options.sync_every, dtype=torch.float64, device=options.device)
        self.steps: list[tuple[int, int]] = []  # (batch index, images) of each step in the window
        self.in_flight: Optional[InFlight] = None  # the window sent at the last sync point, not yet read

    def add(self, batch_index: int, images: int, loss: torch.Tensor) -> None:
        self.losses[len(self.steps)] = loss.detach()
        self.steps.append((batch_index, images))

    def sync_point(self, read_now: bool, agree: bool = True) -> bool:
        """Send the window and read the one sent at the last sync point (this one as well with ``read_now``,
        or when the ranks agreed to stop: ``state`` then holds every step taken); True when every rank should
        stop now. ``agree`` False reads this rank's own flags, without a collective."""
        previous, self.in_flight = self.in_flight, self._send(agree)
        stop = previous is not None and self._fold(previous)
        if read_now or stop:
            sent, self.in_flight = self.in_flight, None
            stop = self._fold(sent) or stop
        return stop

    def _send(self, agree: bool) -> InFlight:
        losses = self.losses[:len(self.steps)]
        bad_here = (~torch.isfinite(losses)).any().double()
        stop_here = torch.full((), float(self.stop_requested()), dtype=torch.float64, device=self.options.device)
        flags = torch.stack([bad_here, stop_here])
        if agree:
            flags = all_reduce_sum(flags, self.options.dist)
        sent = InFlight(torch.cat([flags, losses]), list(self.steps), self.state.step)  # one copy for everything
        self.steps.clear()
        return sent

    def _fold(self, sent: InFlight) -> bool:
        bad_anywhere, stop_anywhere, *values = sent.read()
        if bad_anywhere > 0:
            bad_steps = [index for (index, _), value in zip(sent.steps, values) if not math.isfinite(value)]
            _raise_if_nonfinite(bad_steps[0] if bad_steps else None, self.epoch)
        loss_sum, n = 0.0, 0
        for (_, images_in_step), value in zip(sent.steps, values):  # in step order, in float64, as summed before
            loss_sum += value * images_in_step
            n += images_in_step
        self.state.loss_sum += loss_sum
        if self.on_sync is not None and n:
            self.on_sync(sent.step, loss_sum / n, int(n))
        return stop_anywhere > 0


def train_one_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable,
    options: StepOptions,
    *,
    epoch: int,
    state: Optional[EpochState] = None,
    mixup: Optional[Callable] = None,
    encoder: Optional[Callable] = None,
    stop_requested: Callable[[], bool] = lambda: False,
    on_sync: Optional[Callable[[int, float, int], None]] = None,
    on_step: Optional[Callable[[int], None]] = None,
) -> dict:
    """Train over ``batches``; returns mean loss, images seen (in the whole epoch and in this call, which differ
    after a mid-epoch resume) and steps skipped.

    Each step's loss joins the ``LossWindow``; ``on_sync(step, mean loss, images)`` reports the steps up to
    ``step`` when the window is read. ``on_step(steps)`` runs after every step with the epoch's steps so far (a
    schedule set per step). ``encoder`` (``encodings``) turns each batch, after mixup, into the model's input,
    its draws keyed by the batch's sample keys (a third element, when the loader gives them) and ``epoch``.
    Non-finite losses, and stop requests under torchrun, are agreed on by all ranks at sync points (acted on
    when read), so no rank is left waiting in a collective; a single process reads its stop flag, a host-side
    bool, after every step.
    """
    model.train()
    state = state or EpochState()
    images_before = state.images
    window = LossWindow(options, state, epoch, stop_requested, on_sync)
    skipped = 0
    try:
        for batch_index, (images, target, *keys) in enumerate(batches, start=state.step):
            if mixup is not None:
                images, target = mixup(images, target)
            analogue = images  # what a distillation teacher (an ANN) sees
            if encoder is not None:  # after mixup, as the study encoded
                images = encoder(images, keys[0] if keys else None, epoch)
            loss = _optimise(model, optimizer, loss_fn, options, images, target, analogue)
            if loss is None:
                skipped += 1
            else:
                window.add(batch_index, images.shape[0], loss)
                state.images += images.shape[0]
            state.step = batch_index + 1
            if on_step is not None:
                on_step(state.step)
            # one process needs no agreement to stop: act at once rather than at the next sync point
            stop_now = not options.dist.enabled and stop_requested()
            if (options.sync_point_at(state.step) or stop_now) and window.sync_point(read_now=stop_now):
                raise StopRequested(state.step, state.loss_sum, state.images)
    except DataError:
        # The trainer saves the epoch so far, whose state must hold the loss of every step it counts. Read
        # without a collective: the other ranks, still training, would not join it.
        window.sync_point(read_now=True, agree=False)
        raise
    if window.sync_point(read_now=True):
        raise StopRequested(state.step, state.loss_sum, state.images)
    totals = torch.tensor([state.loss_sum, state.images, state.images - images_before], dtype=torch.float64,
                          device=options.device)
    loss_sum, images, images_now = all_reduce_sum(totals, options.dist).tolist()
    return {"train_loss": loss_sum / max(images, 1), "images": int(images), "images_this_call": int(images_now),
            "skipped_steps": skipped}


def _optimise(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, options: StepOptions,
              images: torch.Tensor, target: torch.Tensor, analogue: torch.Tensor) -> Optional[torch.Tensor]:
    """Forward, backward and the optimizer's step on one batch; returns the loss (on the device), or None for a
    step skipped for its non-finite loss (``nonfinite`` skip, the only mode that reads the loss at every step).
    ``analogue``: the batch before encoding, which a distillation teacher sees."""
    if options.cuda_graphs:  # a new iteration: graph outputs of the last one may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
    with autocast(options.device, options.amp):
        loss = classification_loss(model(images), target, loss_fn, analogue)
    optimizer.zero_grad(set_to_none=True)
    if options.nonfinite == "skip" and not bool(torch.isfinite(loss.detach())):
        return None
    scaler, clip = options.scaler, options.clip_grad
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss


def _raise_if_nonfinite(step: Optional[int], epoch: int) -> None:
    """Raise on this rank or, with ``step`` None, because another rank saw it."""
    where = f"step {step}" if step is not None else "a step of another process"
    raise NonFiniteLossError(
        f"the training loss became non-finite at epoch {epoch}, {where}; the last good checkpoint is kept. "
        "Likely causes: a learning rate too high (try a lower --lr or longer --warmup-epochs) or fp16 overflow "
        "(try --amp bf16 or none); --nonfinite skip skips such steps instead"
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    *,
    dist: DistInfo = SINGLE_PROCESS,
    amp: str = "none",
    recorders: Sequence[ContextManager] = (),
    stop_requested: Callable[[], bool] = lambda: False,
    cuda_graphs: bool = False,
    encoder: Optional[Callable] = None,
) -> dict:
    """The one evaluation pass (training's per-epoch evaluation, ``spikedriven eval``, the study and the
    benchmarks): cross-entropy, top-1 and top-5 (percent) over every sample of every rank, with
    ``recorders`` (a ``SpikeRecorder``, an ``OperationCounter``, ...) active over the same forward passes.
    Batches are ``(images, labels, ...)`` on ``device``; a model with per-step logits ``[T, B, K]`` (TET) is
    scored on their mean over T. ``encoder`` (``encodings``) turns the images into the model's input, keyed by
    a batch's third element where it has one.

    ``model`` may be compiled (``cuda_graphs``: its graphs run as CUDA graphs, whose outputs each batch
    consumes before the next replaces them); it then runs the batches of the first batch's size, and the
    model it compiled the others. A single process raises ``StopRequested`` between batches
    once ``stop_requested()`` (under torchrun the pass runs to its end: the ranks would have to agree)."""
    was_training = model.training
    model.eval()
    per_step = per_step_output(model)
    # A compiled model compiles again for a batch of a new size, and from then on runs graphs for any size
    # (slower kernels, and under CUDA graphs one recording per size): the batches of another size than the
    # first (a partial last one) run on the eager model it compiled, whose neurons count their spikes alike.
    eager, full_size = getattr(model, "_orig_mod", None), None
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top1, top5
    images_seen, num_classes = 0, 0  # counted here: a host number copied to the GPU per batch would wait for its queue to drain
    start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            for recorder in recorders:
                stack.enter_context(recorder)
            for batch in batches:
                if not dist.enabled and stop_requested():
                    raise StopRequested(-1, 0.0, images_seen)
                images, target = batch[0], batch[1]
                images_seen += target.shape[0]
                if encoder is not None:
                    images = encoder(images, batch[2] if len(batch) > 2 else None)
                full_size = full_size or images.shape[0]
                runner = model if eager is None or images.shape[0] == full_size else eager
                if cuda_graphs and runner is model:
                    torch.compiler.cudagraph_mark_step_begin()
                with autocast(device, amp):
                    logits = runner(images)
                logits = (logits.mean(0) if per_step else logits).float()
                num_classes = logits.shape[-1]
                sums += _scores(logits, target)
    finally:
        model.train(was_training)
    totals = torch.cat([sums, torch.tensor([float(images_seen)], dtype=torch.float64, device=device)])
    totals = all_reduce_sum(totals, dist).tolist()
    n = max(totals[3], 1.0)
    return {
        "eval_loss": totals[0] / n,
        "eval_top1": 100.0 * totals[1] / n,
        "eval_top5": 100.0 * totals[2] / n,
        "eval_images": int(totals[3]),
        "eval_seconds": time.perf_counter() - start,
        "num_classes": num_classes,
    }


def _scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A batch's summed cross-entropy, top-1 hits and top-5 hits, float64 on the device."""
    top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    hits = top == target.unsqueeze(1)
    return torch.stack([
        nn.functional.cross_entropy(logits, target, reduction="sum").double(),
        hits[:, 0].sum().double(),
        hits.any(dim=1).sum().double(),
    ])
