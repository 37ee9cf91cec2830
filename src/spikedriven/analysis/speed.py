"""Inference speed per neuron path: the fused kernels and the per-step loop.

The study reports IF soft reset inferring faster than LIF (1,323 vs 1,161
images/s) without naming the GPU or the batch. Here a model is timed on a
stated device, dtype and batch, once with every neuron on the fused kernels
(Triton, CUDA only) and once with every neuron on the per-step PyTorch loop,
so that the neuron's own cost and the implementation's cost can be told apart.

Each measurement: ``warmup`` untimed forwards, then ``repeats`` forwards each
timed alone between device synchronisations; the median is reported (a GC
pause or a clock change moves the mean, rarely the median), with the min and
max beside it. The input is moved to the device before timing: these are the
model's numbers, not the data loader's.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..engine.recorder import neuron_layers
from ..neurons import fused as _fused
from ..neurons import NEURON_PATHS as PATHS, neuron_path
from ..neurons.fused import fused_available

__all__ = ["PATHS", "format_speed", "measure_speed"]


ROW_KEYS = ("path", "batch", "device", "dtype", "available", "images_per_s", "latency_ms", "latency_ms_min",
            "latency_ms_max", "repeats", "warmup", "note")


def _check_path(path: str) -> None:
    if path not in PATHS:
        raise ConfigError(f"unknown speed path {path!r}; the paths are {', '.join(PATHS)}")


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _check_model_device(model: nn.Module, device: torch.device) -> None:
    for p in model.parameters():
        same = p.device.type == device.type and (device.index is None or p.device.index == device.index)
        if not same:
            raise ConfigError(f"the model is on {p.device}, not on {device}: move it there before measuring its speed")
        return


def _fused_unavailable(model: nn.Module, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why the fused path cannot run on ``device`` / ``dtype`` (None: it can)."""
    layers = list(neuron_layers(model).values())
    if not any(m.fused_form() is not None for m in layers):
        return "no neuron of this model has a fused form"
    if any(m._membrane_probe is not None for m in layers):
        return "a membrane recorder is attached, which runs every neuron in the per-step loop"
    # the neurons see the model's dtype, or the autocast dtype where autocast lowers it
    if fused_available(torch.empty(1, device=device, dtype=dtype)):
        return None
    if device.type != "cuda":
        return f"the fused kernels run on CUDA with Triton; on {device.type} every neuron runs the per-step loop"
    if getattr(_fused, "_triton", None) is None:
        return "Triton is not installed, so every neuron runs the per-step loop"
    return f"the fused kernels take float32, float16 or bfloat16, not {_dtype_name(dtype)}"


def _fused_note(model: nn.Module) -> str:
    layers = list(neuron_layers(model).values())
    loop_only = sum(m.fused_form() is None for m in layers)
    return f"{loop_only} of {len(layers)} neuron layers have no fused form and run the loop" if loop_only else ""


def _batch(example: torch.Tensor, size: int) -> torch.Tensor:
    if size <= example.shape[0]:
        return example[:size]
    reps = math.ceil(size / example.shape[0])
    return example.repeat(reps, *([1] * (example.dim() - 1)))[:size]


def _check_inputs(example, batch_sizes, paths, warmup, repeats) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise ConfigError("the speed example must be a batch of images [B, ...] with B >= 1")
    if isinstance(paths, str):
        paths = (paths,)
    if not paths:
        raise ConfigError(f"give at least one speed path ({', '.join(PATHS)})")
    for path in paths:
        _check_path(path)
    for name, value, minimum in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"speed {name} must be an integer >= {minimum}, got {value!r}")
    sizes = (1, example.shape[0]) if batch_sizes is None else tuple(batch_sizes)
    if not sizes:
        raise ConfigError("give at least one batch size to measure the speed at")
    for b in sizes:
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise ConfigError(f"speed batch sizes must be integers >= 1, got {b!r}")
    return tuple(dict.fromkeys(paths)), tuple(dict.fromkeys(sizes))


def _row(path, batch, device_label, dtype_name, warmup, repeats, times=None, note="") -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(path=path, batch=batch, device=device_label, dtype=dtype_name, available=times is not None,
               repeats=repeats, warmup=warmup, note=note)
    if times is not None:
        median = statistics.median(times)
        row.update(images_per_s=batch / median if median > 0 else math.inf, latency_ms=median * 1e3,
                   latency_ms_min=min(times) * 1e3, latency_ms_max=max(times) * 1e3)
    return row


def _time_forwards(model, x, device, amp_dtype, warmup, repeats) -> list[float]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext())
    times = []
    with torch.no_grad(), autocast:
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            sync()  # nothing queued before may land in this forward's time
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
    return times


def measure_speed(
    model: nn.Module,
    example: torch.Tensor,
    device,
    amp_dtype: Optional[torch.dtype] = None,
    batch_sizes: Optional[Sequence[int]] = None,
    paths: Sequence[str] = PATHS,
    warmup: int = 3,
    repeats: int = 10,
) -> list[dict]:
    """Images per second of ``model`` (already on ``device``) per neuron path and batch size.

    ``example``: one evaluation batch ``[B, ...]``; a batch of size b is its
    first b images, or it tiled when b > B. ``batch_sizes``: default 1 and B.
    ``paths``: "fused" (every neuron on the fused kernels; a row marked
    unavailable, with the reason in ``note``, where they cannot run) and
    "loop" (every neuron on the per-step loop). Returns one row per path and
    batch with the keys of ``ROW_KEYS``; times in ms, ``images_per_s`` = b /
    median latency. The model's train/eval mode and each neuron's
    path are restored afterwards.
    """
    paths, sizes = _check_inputs(example, batch_sizes, paths, warmup, repeats)
    device = torch.device(device)
    _check_model_device(model, device)
    dtype = amp_dtype if amp_dtype is not None else _model_dtype(model)
    label, dtype_name = _device_label(device), _dtype_name(dtype)
    modes = [(m, m.training) for m in model.modules()]  # per module: a frozen part stays frozen
    rows = []
    try:
        model.eval()
        for path in paths:
            why_not = _fused_unavailable(model, device, dtype) if path == "fused" else None
            note = _fused_note(model) if path == "fused" else ""
            for b in sizes:
                if why_not is not None:
                    rows.append(_row(path, b, label, dtype_name, warmup, repeats, note=why_not))
                    continue
                x = _batch(example, b).to(device)
                try:
                    with neuron_path(model, path):
                        times = _time_forwards(model, x, device, amp_dtype, warmup, repeats)
                except torch.cuda.OutOfMemoryError:
                    del x
                    torch.cuda.empty_cache()
                    rows.append(_row(path, b, label, dtype_name, warmup, repeats,
                                     note=f"out of GPU memory at batch {b}"))
                    continue
                rows.append(_row(path, b, label, dtype_name, warmup, repeats, times, note))
    finally:
        for m, training in modes:
            m.training = training
    return rows


def _number(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _counts(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    values = list(dict.fromkeys(r[key] for r in rows))
    return " / ".join(map(str, values))


def format_speed(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of ``measure_speed`` as an aligned text table."""
    if not rows:
        return "inference speed: nothing measured"
    header = (f"inference speed: median of {_counts(rows, 'repeats')} timed forwards after "
              f"{_counts(rows, 'warmup')} warm-up (input already on the device; images/s = batch / median)")
    table = [("path", "batch", "images/s", "latency ms median [min-max]", "device", "dtype", "note")]
    for r in rows:
        if r["available"]:
            latency = (f"{_number(r['latency_ms'], 2)} [{_number(r['latency_ms_min'], 2)}-"
                       f"{_number(r['latency_ms_max'], 2)}]")
        else:
            latency = "-"
        table.append((r["path"], str(r["batch"]), _number(r["images_per_s"], 1), latency, r["device"], r["dtype"],
                      r["note"] or ""))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    right = {1, 2}  # batch and images/s: digits line up
    lines = [header]
    for line in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
