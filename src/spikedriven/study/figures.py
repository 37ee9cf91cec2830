"""A study's figures: top-1 per epoch, firing rate per layer, accuracy against energy per image."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..plotting import text_width, wrap
from .plan import group_text, setting_label

if TYPE_CHECKING:
    from .runner import Study


def _label(study: Study, model: str, mode: str, thr) -> str:
    """A setting's legend entry; the model (and its varied values) named when the study compares several."""
    return setting_label(mode, thr, model if len(study.groups) > 1 else None)


def curves_figure(study: Study) -> Figure:
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for (model, mode, thr), runs in study.done_by_setting().items():
        curves = [summary_top1(study.run_dir(r)) for r in runs]
        n = min(len(c) for c in curves)
        epochs = range(n)
        mean = [statistics.fmean(c[e] for c in curves) for e in epochs]
        seeds = f"{len(curves)} seed{'s' if len(curves) > 1 else ''}"
        line, = ax.plot(epochs, mean, label=f"{_label(study, model, mode, thr)} ({seeds})")
        if len(curves) > 1:
            lo = [min(c[e] for c in curves) for e in epochs]
            hi = [max(c[e] for c in curves) for e in epochs]
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("evaluation top-1 (%)")
    ax.set_title(wrap(f"Evaluation top-1 per epoch (line: mean over seeds, band: min to max)\nstudy {study.folder.name}: "
                      "each run's summary.csv", fig.get_figwidth() - 0.4, 11), fontsize=11)
    ax.legend(fontsize=8)
    return fig


def firing_figure(study: Study) -> Figure:
    """Grouped bars: one group per neuron layer (categories, so no line joins them), one bar per setting; one
    panel per model, whose layers are its own."""
    panels, titles = {}, {}
    for (model, mode, thr), runs in study.done_by_setting().items():
        titles[model] = group_text(study.configs[runs[0]], runs[0])  # the size spelled out
        mets = [json.loads((study.eval_dir(r) / "metrics.json").read_text()) for r in runs]
        layers = list(mets[0]["firing_rates"])
        rates = [statistics.fmean(m["firing_rates"][l]["mean"] for m in mets) for l in layers]
        panels.setdefault(model, {})[(mode, thr)] = (layers, rates)
    widest = max(len(next(iter(series.values()))[0]) * len(series) for series in panels.values())
    longest = max(len(layer) for series in panels.values() for layer in next(iter(series.values()))[0])
    fig = Figure(figsize=(max(8.0, 0.25 * widest + 3), (4.5 + text_width(min(longest, 36), 7)) * len(panels)),
                 layout="constrained")
    for ax, (model, series) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels.items()):
        layers = next(iter(series.values()))[0]
        width = 0.8 / len(series)
        for i, ((mode, thr), (_, rates)) in enumerate(series.items()):
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar([x + offset for x in range(len(layers))], rates, width, label=setting_label(mode, thr))
        # upright: slanted names' boxes would cover each other; a name past 36 characters takes two lines
        ax.set_xticks(range(len(layers)), [wrap(l, text_width(36, 7), 7) for l in layers], rotation=90, fontsize=7)
        ax.set_ylabel("firing rate (mean over T and seeds)")
        ax.set_title(wrap(f"Firing rate per neuron layer: {titles[model]}\nstudy {study.folder.name}: each run's eval_last "
                          "(last.pth.tar)", fig.get_figwidth() - 0.4, 11), fontsize=11)
        ax.legend(fontsize=8)
    return fig


def tradeoff_figure(rows: list[dict], models: Sequence[str], study_name: Optional[str] = None) -> Figure:
    """Final top-1 against energy per image, one panel per energy model (``models``); bars: std over seeds.
    ``study_name``: the study's folder, named in the title."""
    width = max(4.5 * len(models) + 1.0, 7.0)
    fig = Figure(figsize=(width, 5.2), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    several = len({row["model"] for row in rows}) > 1  # architectures: each point names its own
    for ax, model in zip(axes, models):
        for r in rows:
            ax.errorbar(r[f"energy_{model}_uj_mean"], r["final_top1_mean"], xerr=r[f"energy_{model}_uj_std"],
                        yerr=r["final_top1_std"], fmt="o", capsize=3,
                        label=setting_label(r["mode"], r["v_threshold"], r["size"] if several else None))
        ax.set_xlabel(f"energy per image, {model} (uJ)")
        ax.set_ylabel("final top-1 (%)")
        ax.set_title(f"energy model: {model}", fontsize=9)
    axes[0].legend(fontsize=7)
    about = "energy: each run's eval_last (last.pth.tar); top-1: its final epoch"
    title = "Accuracy against energy (points: mean over seeds; bars: std over seeds)"
    fig.suptitle(wrap(f"{title}\n" + (f"study {study_name}: " if study_name else "") + about, width - 0.4, 11),
                 fontsize=11)
    return fig


def summary_top1(run_dir: Path) -> list[float]:
    with open(run_dir / "summary.csv", newline="") as f:
        return [float(r["eval_top1"]) for r in csv.DictReader(f)]
