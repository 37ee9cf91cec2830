"""Membrane diagnostics: where the potential sits before firing, and what a reset leaves.

The study credits IF soft reset's accuracy to its "retained residual
excitation": a soft reset keeps ``H - u_th`` after a spike where a hard reset
drops to ``V_reset``. ``MembraneRecorder`` records, per neuron layer and time
step, the potential before firing ``H`` (mean, spread, how much of it lies
within 10 % of the threshold, a histogram of ``H / u_th``), the potential
after the reset ``V`` (over all neurons, and over those that just fired: the
charge a spike leaves behind) and the firing fraction.

Recording runs every neuron on the per-step loop (the fused kernels never
materialise H; the spikes are the same in fp32). The sums stay on the
model's device as float64 and are read back only when asked for, so a
recording over a whole evaluation set stalls the GPU once. A layer whose
neuron does not go through the loop (a stateless neuron such as
``multispike`` computes all steps at once) has no membrane and is listed in
``skipped``.

Recording in training mode counts every forward a neuron runs, including the
recomputation some layers do during backward; record in eval mode.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

from ..atomic import atomic_write
from ..engine.recorder import neuron_layers
from ..neurons import SpikingNeuron
from ..plotting import save_png, wrap

__all__ = ["HIST_BINS", "HIST_RANGE", "NEAR_THRESHOLD", "MembraneRecorder", "format_membrane", "write_membrane"]

HIST_RANGE = (-2.0, 3.0)  # H / u_th: from well below rest to three thresholds
HIST_BINS = 50
NEAR_THRESHOLD = 0.1  # |H - u_th| <= 0.1 |u_th|

# Edges k / 10 are exact decimal values (1.0 among them), so H = u_th falls in the bin [1.0, 1.1):
# the bins from 1 upward hold exactly the neurons that fire, Θ(H - u_th) being 1 for H >= u_th.
_EDGES = [k / 10 for k in range(-20, 31)]

# per step, float64: sum H, sum H^2, sum H/u_th, sum (H/u_th)^2, count near u_th, sum V, sum V where fired, fired
_SUM_H, _SUM_H2, _SUM_R, _SUM_R2, _NEAR, _SUM_V, _SUM_V_FIRED, _FIRED = range(8)
_STATS = 8

ROW_KEYS = ("layer", "neuron", "step", "neuron_steps", "h_mean", "h_std", "h_over_threshold_mean",
            "h_over_threshold_std", "near_threshold_fraction", "v_after_reset_mean", "v_after_fire_mean",
            "firing_fraction", "v_threshold")


class _Layer:
    """One neuron layer's running sums, one entry per time step."""

    def __init__(self, module: SpikingNeuron):
        self.module = module
        self.has_threshold = callable(getattr(module, "threshold", None))
        self.counts: list[int] = []  # neuron-steps per step: sizes are known without reading the device
        self.stats: list[torch.Tensor] = []  # [_STATS] float64 per step
        self.hist: list[torch.Tensor] = []  # [HIST_BINS + 2] int64 per step: below, bins, above
        self.last_threshold: Any = None
        self.calls = 0  # forwards seen, to tell "not run" from "runs without the loop"
        self._edges: Optional[torch.Tensor] = None

    def edges(self, device) -> torch.Tensor:
        if self._edges is None or self._edges.device != device:
            self._edges = torch.tensor(_EDGES, dtype=torch.float64, device=device)
        return self._edges

    def record(self, t: int, h: torch.Tensor, spike: torch.Tensor, v: torch.Tensor) -> None:
        h = h.detach().to(torch.float64)
        v = v.detach().to(torch.float64)
        fired = spike.detach() > 0
        if self.has_threshold:
            u = self.module.threshold()
            u = u.detach().to(device=h.device, dtype=torch.float64) if isinstance(u, torch.Tensor) else float(u)
            self.last_threshold = u
            r = h / u
            near = ((h - u).abs() <= NEAR_THRESHOLD * abs(u)).sum(dtype=torch.float64)
            sum_r, sum_r2 = r.sum(), r.square().sum()
            # bucketize(right=True): 0 below the first edge, len(edges) at or above the last
            counts = torch.bincount(torch.bucketize(r.flatten(), self.edges(h.device), right=True),
                                    minlength=HIST_BINS + 2)
        else:
            near = sum_r = sum_r2 = h.new_zeros(())
            counts = None
        stats = torch.stack([h.sum(), h.square().sum(), sum_r, sum_r2, near, v.sum(), (v * fired).sum(),
                             fired.sum(dtype=torch.float64)])
        while len(self.stats) <= t:  # the first batch, or one with more steps than before
            self.counts.append(0)
            self.stats.append(torch.zeros(_STATS, dtype=torch.float64, device=h.device))
            self.hist.append(torch.zeros(HIST_BINS + 2, dtype=torch.int64, device=h.device))
        self.counts[t] += h.numel()
        self.stats[t] += stats
        if counts is not None:
            self.hist[t] += counts

    def threshold_value(self) -> Optional[float]:
        if self.last_threshold is None:
            return None
        return float(self.last_threshold)


def _ratio(numerator: float, denominator: float) -> Optional[float]:
    return numerator / denominator if denominator else None


def _std(sum_x: float, sum_x2: float, n: int) -> float:
    # population std; the clamp absorbs rounding that leaves E[x^2] - E[x]^2 a hair below 0
    mean = sum_x / n
    return math.sqrt(max(sum_x2 / n - mean * mean, 0.0))


def _stats_row(layer: _Layer, n: int, s: Sequence[float]) -> dict:
    th = layer.has_threshold
    return dict(
        neuron_steps=n, h_mean=s[_SUM_H] / n, h_std=_std(s[_SUM_H], s[_SUM_H2], n),
        h_over_threshold_mean=s[_SUM_R] / n if th else None,
        h_over_threshold_std=_std(s[_SUM_R], s[_SUM_R2], n) if th else None,
        near_threshold_fraction=s[_NEAR] / n if th else None,
        v_after_reset_mean=s[_SUM_V] / n, v_after_fire_mean=_ratio(s[_SUM_V_FIRED], s[_FIRED]),
        firing_fraction=s[_FIRED] / n, v_threshold=layer.threshold_value(),
    )


class MembraneRecorder:
    """Context manager recording the membrane of every neuron layer of ``model``, per time step.

    While the block runs, each layer's loop reports ``H``, the spikes and ``V``
    after every step (``SpikingNeuron._membrane_probe``); on exit the probes
    are removed, exceptions included. Sums accumulate over all batches and
    over repeated ``with`` blocks. ``rows()``, ``histograms()``, ``summary()``
    and ``skipped`` read them back, during or after recording.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._layers: "OrderedDict[str, _Layer]" = OrderedDict(
            (name, _Layer(m)) for name, m in neuron_layers(model).items())
        self._attached: list[tuple[SpikingNeuron, Any]] = []
        self._handles: list = []

    # ------------------------------------------------------------ recording
    def __enter__(self) -> "MembraneRecorder":
        try:
            for layer in self._layers.values():
                self._attach(layer)
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._detach()

    def _attach(self, layer: _Layer) -> None:
        module = layer.module
        outer = module.__dict__.get("_membrane_probe")  # a recorder already attached keeps recording

        def probe(t, h, spike, v):
            layer.record(t, h, spike, v)
            if outer is not None:
                outer(t, h, spike, v)

        def count(module, inputs, output):
            layer.calls += 1

        self._attached.append((module, outer))
        module._membrane_probe = probe
        self._handles.append(module.register_forward_hook(count))

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        # in reverse, so that a layer listed twice would still end with what it had before
        for module, outer in reversed(self._attached):
            if outer is not None:
                module._membrane_probe = outer
            elif "_membrane_probe" in module.__dict__:
                del module._membrane_probe
        self._attached, self._handles = [], []

    # -------------------------------------------------------------- results
    def _read(self) -> dict[str, tuple[list[int], list[list[float]], list[list[int]]]]:
        """Every recorded layer's counts, sums and histograms, read back in one go per layer."""
        out = {}
        for name, layer in self._layers.items():
            if layer.stats:
                out[name] = (list(layer.counts), torch.stack(layer.stats).cpu().tolist(),
                             torch.stack(layer.hist).cpu().tolist())
        return out

    @property
    def skipped(self) -> "OrderedDict[str, str]":
        """Layers without membrane data, with the reason."""
        out = OrderedDict()
        for name, layer in self._layers.items():
            if layer.stats:
                continue
            if layer.calls:
                overrides = type(layer.module).multi_step is not SpikingNeuron.multi_step
                how = "computes all its steps at once" if overrides else "does not run the per-step loop"
                out[name] = (f"its neuron ({layer.module.name}) {how}, so it exposes no membrane potential "
                             "(stateless, or a loop of its own)")
            else:
                out[name] = "the layer did not run while recording"
        return out

    def rows(self) -> list[dict]:
        """One row per (layer, time step), with the keys of ``ROW_KEYS``."""
        rows = []
        for name, (counts, stats, _) in self._read().items():
            layer = self._layers[name]
            for t, (n, s) in enumerate(zip(counts, stats)):
                if n:
                    rows.append(dict(layer=name, neuron=layer.module.name, step=t, **_stats_row(layer, n, s)))
        return rows

    def summary(self) -> list[dict]:
        """One row per recorded layer over all its steps: every neuron-step weighs the same
        (so the std is that of all neuron-steps together, spread between steps included)."""
        out = []
        for name, (counts, stats, _) in self._read().items():
            layer = self._layers[name]
            totals = [sum(s[k] for s in stats) for k in range(_STATS)]
            row = dict(layer=name, neuron=layer.module.name, steps=sum(1 for n in counts if n),
                       **_stats_row(layer, sum(counts), totals))
            out.append(row)
        return out

    def histograms(self) -> "OrderedDict[str, dict]":
        """Per layer with a threshold: ``edges`` of H / u_th (HIST_BINS + 1), ``counts`` per step
        ([steps][HIST_BINS]), and per step the counts ``below`` the first edge and ``above`` the last."""
        out = OrderedDict()
        for name, (_, _, hist) in self._read().items():
            if not self._layers[name].has_threshold:
                continue
            out[name] = dict(edges=list(_EDGES), counts=[h[1:-1] for h in hist], below=[h[0] for h in hist],
                             above=[h[-1] for h in hist])
        return out


# -------------------------------------------------------------- text table


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_membrane(summary: Sequence[Mapping[str, Any]], skipped: Optional[Mapping[str, str]] = None) -> str:
    """``MembraneRecorder.summary()`` (and ``skipped``) as an aligned text table."""
    lines = ["membrane potential per neuron layer, over all time steps (H: the potential before firing, shown as "
             "H / u_th; V: the potential after the reset, in the units of u_th)"]
    if summary:
        table = [("layer", "neuron", "u_th", "mean H/u_th", "std", "within 10% of u_th", "V after reset",
                  "V left after a spike", "firing fraction")]
        for r in summary:
            table.append((r["layer"], r["neuron"], _fmt(r.get("v_threshold")), _fmt(r.get("h_over_threshold_mean")),
                          _fmt(r.get("h_over_threshold_std")), _fmt(r.get("near_threshold_fraction"), 4),
                          _fmt(r.get("v_after_reset_mean")), _fmt(r.get("v_after_fire_mean")),
                          _fmt(r.get("firing_fraction"), 4)))
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        for line in table:
            cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
            lines.append("  ".join(cells).rstrip())
    else:
        lines.append("no neuron layer recorded")
    for name, reason in (skipped or {}).items():
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)


# ------------------------------------------------------------------- files


def _write_rows_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, ROW_KEYS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_hist_csv(path: Path, histograms: Mapping[str, Mapping]) -> Path:
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "step", "bin_low", "bin_high", "count"])
        for name, hist in histograms.items():
            edges = hist["edges"]
            for t, counts in enumerate(hist["counts"]):
                writer.writerow([name, t, "-inf", edges[0], hist["below"][t]])
                for low, high, count in zip(edges[:-1], edges[1:], counts):
                    writer.writerow([name, t, low, high, count])
                writer.writerow([name, t, edges[-1], "inf", hist["above"][t]])
    return path


def membrane_figure(histograms: Mapping[str, Mapping], about: Optional[str] = None,
                    neurons: Optional[Mapping[str, str]] = None) -> Figure:
    """Small multiples: per layer, the share of neurons per bin of H / u_th at each time step. ``about``: what
    the evaluation is of (``reports.evaluation_caption``); ``neurons``: each layer's neuron, named in its panel."""
    names = list(histograms)
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    width = max(3.2 * cols, 6.4)
    fig = Figure(figsize=(width, 2.6 * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes[len(names):]:
        ax.set_axis_off()
    if not names:
        axes[0].text(0.5, 0.5, "no neuron layer with a threshold recorded", ha="center", va="center")
    for ax, name in zip(axes, names):
        _membrane_panel(ax, histograms[name], name + (f" ({neurons[name]})" if neurons and name in neurons else ""),
                        width / cols)
    if names:
        axes[0].set_ylabel("share of neurons", fontsize=7)
        axes[0].legend(fontsize=6, frameon=False)
    title = "Membrane potential before firing, per time step (red: threshold, band: within 10 %)"
    fig.suptitle(wrap(title + (f"\n{about}" if about else ""), width - 0.4, 9), fontsize=9)
    return fig


def _membrane_panel(ax, hist: Mapping, title: str, width: float) -> None:
    edges = hist["edges"]
    ax.axvspan(1 - NEAR_THRESHOLD, 1 + NEAR_THRESHOLD, color="tab:red", alpha=0.15, lw=0)
    ax.axvline(1.0, color="tab:red", lw=1)
    for t, counts in enumerate(hist["counts"]):
        # shares of all neuron-steps at that step, outside the range included, so steps compare
        total = sum(counts) + hist["below"][t] + hist["above"][t]
        ax.stairs([c / total for c in counts] if total else counts, edges, label=f"t={t}")
    ax.set_title(wrap(title, width - 0.5, 8), fontsize=8)  # a layer's full name is long: it wraps in its panel
    ax.set_xlim(edges[0], edges[-1])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("H / u_th", fontsize=7)


def _about_folder(folder: Path) -> Optional[str]:
    """What the evaluation written in ``folder`` is of, from its metrics file (written before the membrane)."""
    from .reports import METRICS_FILE, evaluation_caption, load_metrics

    try:
        return evaluation_caption(load_metrics(folder / METRICS_FILE))
    except Exception:  # noqa: BLE001 - a figure without its caption beats no figure
        return None


def write_membrane(folder, recorder: MembraneRecorder, about: Optional[str] = None) -> dict[str, Path]:
    """``membrane.csv`` (rows), ``membrane_hist.csv`` and ``membrane.png`` in ``folder``; the figure says
    what it is of (``about``, else what the folder's ``metrics.json`` says)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    histograms = recorder.histograms()
    files = {
        "csv": _write_rows_csv(folder / "membrane.csv", recorder.rows()),
        "hist_csv": _write_hist_csv(folder / "membrane_hist.csv", histograms),
    }
    about = about if about is not None else _about_folder(folder)
    neurons = {name: layer.module.name for name, layer in recorder._layers.items()}
    files["png"] = save_png(membrane_figure(histograms, about, neurons), folder / "membrane.png")
    return files
