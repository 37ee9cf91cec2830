"""What a study will cost, said before it runs: its grid in words (each axis's values, and whether they were
given or are the defaults) and an estimate of the time its training still takes, from the rate of its runs
already finished or, before any has, from a short probe of one run's training steps on this machine."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from ..config import Config
from ..engine.run_folder import read_summary_rows
from ..errors import SpikedrivenError
from ..neurons import neuron_class
from .plan import PlannedRun, size_text

if TYPE_CHECKING:
    from .runner import Study

PROBE_SECONDS = 3.0  # the probe's timed steps stop once they have taken about this long


@dataclass(frozen=True)
class GridChoices:
    """What the command line gave for each axis of the grid; None where it gave nothing (the default)."""

    models: Optional[Sequence[str]] = None
    modes: Optional[Sequence[str]] = None
    thresholds: Optional[str] = None
    lif_thresholds: Optional[str] = None
    seeds: Optional[int] = None
    vary: Sequence[tuple[str, list]] = ()


def _numbers(values) -> str:
    return ", ".join(repr(float(v)) for v in values)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def grid_lines(study: Study, choices: GridChoices, stale: Sequence[PlannedRun] = ()) -> list[str]:
    """The runs and epochs in total, then one line per axis, saying where its values came from."""
    runs = study.runs
    neurons = list(dict.fromkeys((r.mode, r.v_threshold) for r in runs))
    seeds = list(dict.fromkeys(r.seed for r in runs))
    each = sorted({study.configs[r].total_epochs for r in runs})
    left = sum(remaining_epochs(study, r, stale) for r in runs)
    variants = len(study.groups) // len(study.models)
    shape = [_count(len(study.models), "model"), *([_count(variants, "variant")] if choices.vary else []),
             _count(len(neurons), "neuron setting"), _count(len(seeds), "seed")]
    lines = [f"{_count(len(runs), 'run')} ({' x '.join(shape)}), "
             f"{each[0] if len(each) == 1 else f'{each[0]} to {each[-1]}'} epochs each, "
             f"{sum(study.configs[r].total_epochs for r in runs)} epochs in total, {left} of them still to train"]
    sizes = "; ".join(size_text(study.configs[next(r for r in runs if r.model == m)]) for m in study.models)
    lines.append(f"--models {','.join(choices.models)}: {sizes}" if choices.models
                 else f"--models not given: the config's model, {sizes}")
    modes = list(dict.fromkeys(r.mode for r in runs))
    lines.append(f"--modes {','.join(modes)}" if choices.modes else f"--modes not given: {', '.join(modes)} (default)")
    lines += _threshold_lines(runs, choices)
    base = seeds[0]
    lines.append(f"--seeds {len(seeds)}: {', '.join(map(str, seeds))}" if choices.seeds is not None
                 else f"--seeds not given: one seed, {base} (the config's seed)")
    lines += [f"--vary {key}: {', '.join(map(str, values))}" for key, values in choices.vary]
    return lines


def _threshold_lines(runs: Sequence[PlannedRun], choices: GridChoices) -> list[str]:
    lines = []
    for flag, leaky, given in (("--thresholds", False, choices.thresholds),
                               ("--lif-thresholds", True, choices.lif_thresholds)):
        modes = list(dict.fromkeys(r.mode for r in runs if r.v_threshold is not None
                                   and neuron_class(r.mode).leaky == leaky))
        if not modes:
            continue
        values = list(dict.fromkeys(r.v_threshold for r in runs if r.mode == modes[0]))
        kind = "leaky" if leaky else "non-leaky"
        said = f"{flag} {given}" if given is not None else f"{flag} not given"
        lines.append(f"{said}: the {kind} modes {', '.join(modes)} run at {_numbers(values)}"
                     + ("" if given is not None else " (default)"))
    plain = list(dict.fromkeys(r.mode for r in runs if r.v_threshold is None))
    if plain:
        lines.append(f"{', '.join(plain)} take{'s' if len(plain) == 1 else ''} no threshold")
    return lines


def remaining_epochs(study: Study, run: PlannedRun, stale: Sequence[PlannedRun] = ()) -> int:
    """The epochs ``run`` has still to train: none when trained, all when stale (it starts again)."""
    total = study.configs[run].total_epochs
    if run in stale:
        return total
    if study.is_trained(run):
        return 0
    return max(0, total - len(read_summary_rows(study.run_dir(run))))


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def finished_rate(study: Study, stale: Sequence[PlannedRun] = ()) -> Optional[tuple[float, int, int]]:
    """Seconds an epoch of this study's finished runs took (training and the per-epoch evaluation), over how
    many epochs of how many runs; None before any run finished."""
    seconds, runs = [], 0
    for run in study.runs:
        if run in stale or not study.is_trained(run):
            continue
        rows = read_summary_rows(study.run_dir(run))
        times = [float(r.get("epoch_seconds") or r.get("train_seconds") or "nan") for r in rows]
        times = [t for t in times if t == t and t > 0]
        seconds += times
        runs += bool(times)
    return (statistics.fmean(seconds), len(seconds), runs) if seconds else None


def estimate_line(study: Study, stale: Sequence[PlannedRun] = (), parallel: int = 1) -> str:
    """The time the study's training still takes, and how that was reckoned."""
    left = {r: remaining_epochs(study, r, stale) for r in study.runs}
    epochs = sum(left.values())
    if not epochs:
        return "time: nothing left to train (only evaluations and the tables, if missing)"
    rate = finished_rate(study, stale)
    if rate is not None:
        per_epoch, n_epochs, n_runs = rate
        covers = "training and the per-epoch evaluation; each run's final evaluation is not counted"
        source = (f"the mean over {_count(n_epochs, 'epoch')} of the {_count(n_runs, 'run')} of this study already "
                  "finished")
    else:
        first = next(r for r in study.runs if left[r])
        probed = probe_epoch(study.configs[first])
        if isinstance(probed, str):
            return f"time: no estimate for the {epochs} epochs still to train: {probed}"
        per_epoch, source = probed
        covers = "training only: the per-epoch evaluation and each run's final evaluation are not included"
        source = f"from a probe of {first.name}'s model on this machine: {source}"
    total = per_epoch * epochs
    together = f" (about {duration_text(total / parallel)} with {parallel} runs at once)" if parallel > 1 else ""
    return (f"time: about {duration_text(total)} for the {epochs} epochs still to train{together}, at "
            f"{per_epoch:.3g} s an epoch ({covers}); {source}")


def probe_epoch(cfg: Config) -> tuple[float, str] | str:
    """Seconds a training epoch of ``cfg`` takes here, from a probe of a few steps, and how it was measured;
    or why there is no figure. The probe is advisory: whatever stops it is reported, never raised."""
    try:
        step, how = probe_step(cfg)
    except Exception as e:  # an estimate must never stop the study it describes
        return f"the probe of a training step failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    images = _train_images(cfg)
    if images is None:
        return (f"a probe put a training step at {step:.3g} s ({how}), and the training set is not here to count "
                "the steps of an epoch")
    steps = max(1, images // cfg.batch_size)
    return step * steps, f"{step:.3g} s a training step, {how}, x {steps} steps an epoch ({images} training images)"


def _train_images(cfg: Config) -> Optional[int]:
    from ..data import build_datasets

    try:
        return len(build_datasets(cfg).train)
    except (SpikedrivenError, OSError):
        return None


def probe_step(cfg: Config) -> tuple[float, str]:
    """Seconds one training step (forward, backward, optimizer) of ``cfg``'s model takes on its device with a
    synthetic batch of the run's shape, and how it was measured. The batch doubles from 2 up to the run's; once
    a step takes long it stops and extrapolates linearly from the last two sizes, so that the probe stays within
    a few seconds on any model."""
    from ..engine.distributed import resolve_device
    from ..engine.recipe import build_optimizer_and_scheduler
    from ..models import build_model

    device = resolve_device(cfg.device)
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer_and_scheduler(cfg, model)[0]
    step = _step_function(cfg, model, optimizer, device)
    where = f"on synthetic images, eager PyTorch on {device}"
    full, batch, times = cfg.batch_size, min(2, cfg.batch_size), {}
    while True:
        step(batch)  # a batch's first step allocates
        times[batch] = step(batch)
        if batch == full or times[batch] > PROBE_SECONDS / 6:
            break
        batch = min(2 * batch, full)
    if batch < full:
        sizes = sorted(times)[-2:]
        slope = (times[sizes[-1]] - times[sizes[0]]) / max(1, sizes[-1] - sizes[0])
        guess = times[batch] + max(slope, 0.0) * (full - batch)
        return guess, f"timed at batch {', '.join(map(str, times))} and extrapolated to batch {full} {where}"
    runs, started = [times[full]], time.perf_counter()
    while len(runs) < 5 and time.perf_counter() - started < PROBE_SECONDS / 2:
        runs.append(step(full))
    return statistics.median(runs), f"the median of {len(runs)} steps at batch {full} {where}"


def _step_function(cfg: Config, model, optimizer, device):
    """``step(batch) -> seconds``: one timed training step on random images. Its loss, the outputs' mean, costs
    backward what the run's loss costs: the gradient flows through the same model."""
    import torch

    from ..data.registry import dataset_def

    frames = dataset_def(cfg.dataset).frames
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    autocast = dtype is not None and device.type == "cuda"

    def step(batch: int) -> float:
        shape = (batch, cfg.time_steps) if frames else (batch,)
        images = torch.randn(*shape, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            out = model(images)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    return step
