"""Writing an evaluation folder and comparing evaluations.

An evaluation folder holds ``metrics.json`` (everything, machine-readable),
``firing_rates.csv``, ``energy.csv``, ``firing_rates.png`` and ``energy.png``.
Plots use matplotlib's object-oriented API with the Agg canvas, so no global
backend is touched and no display is needed.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .atomic import atomic_write, write_text_atomic
from .errors import SpikedrivenError

PathLike = Union[str, os.PathLike]

METRICS_FORMAT = "spikedriven-eval"
METRICS_VERSION = 1
METRICS_FILE = "metrics.json"
REQUIRED_KEYS = ("top1", "mean_firing_rate", "firing_rates", "layers", "totals")

__all__ = [
    "compare",
    "compare_figure",
    "find_metrics",
    "format_summary",
    "load_metrics",
    "plot_compare",
    "plot_energy",
    "plot_firing_rates",
    "write_energy_csv",
    "write_evaluation",
    "write_firing_rates_csv",
    "write_metrics",
]


# ------------------------------------------------------------------ writers


def write_metrics(path: PathLike, result: Mapping[str, Any], config: Optional[Mapping] = None, checkpoint: Optional[PathLike] = None) -> Path:
    """``metrics.json``: the analysis result plus the config and checkpoint it came from."""
    payload = {
        "format": METRICS_FORMAT,
        "format_version": METRICS_VERSION,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "config": dict(config) if config is not None else None,
        **result,
    }
    path = Path(path)
    # allow_nan=False: a NaN would make the file unreadable for strict JSON parsers
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def write_firing_rates_csv(path: PathLike, result: Mapping[str, Any]) -> Path:
    """Rows = neuron layers; columns t0..t{T-1} and their mean."""
    steps = result["time_steps"] or 0
    path = Path(path)
    with atomic_write(path, newline="") as f:
        out = csv.writer(f)
        out.writerow(["layer", *(f"t{t}" for t in range(steps)), "mean"])
        for name, rate in result["firing_rates"].items():
            out.writerow([name, *(f"{r:.6f}" for r in rate["per_step"]), f"{rate['mean']:.6f}"])
    return path


def write_energy_csv(path: PathLike, result: Mapping[str, Any]) -> Path:
    """One row per Conv2d / Linear layer; ``sops`` and ``energy_pj`` are per image."""
    path = Path(path)
    with atomic_write(path, newline="") as f:
        out = csv.writer(f)
        out.writerow(["layer", "kind", "macs_per_step", "input_firing_rate", "sops", "energy_pj"])
        for row in result["layers"]:
            rate = row["input_firing_rate"]
            out.writerow([
                row["name"], row["kind"], row["macs_per_step"],
                "" if rate is None else f"{rate:.6f}", f"{row['sops']:.1f}", f"{row['energy_j'] * 1e12:.3f}",
            ])
    return path


def write_energy_model_csv(path: PathLike, estimate: Mapping[str, Any]) -> Path:
    """One energy model's estimate per image: one row per component (a layer's operations, a neuron
    layer's steps, a kind of structure operation, a memory traffic), then the total."""
    path = Path(path)
    total = estimate["total_j"]
    with atomic_write(path, newline="") as f:
        out = csv.writer(f)
        out.writerow(["component", "kind", "count", "energy_pj", "share"])
        for part in estimate["components"]:
            share = part["energy_j"] / total if total else 0.0
            out.writerow([part["name"], part["kind"], f"{part['count']:.1f}", f"{part['energy_j'] * 1e12:.3f}",
                          f"{share:.6f}"])
        out.writerow(["total", "", "", f"{total * 1e12:.3f}", "1.000000" if total else "0.000000"])
    return path


def write_speed_csv(path: PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    path = Path(path)
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _bar_figure(n_bars: int) -> Figure:
    # widen with the number of layers so rotated names stay legible
    return Figure(figsize=(max(6.0, 0.45 * n_bars + 2.0), 4.8), layout="constrained")


def plot_firing_rates(path: PathLike, result: Mapping[str, Any]) -> Path:
    """Grouped bars: one group per neuron layer, one bar per time step."""
    names = list(result["firing_rates"])
    steps = result["time_steps"] or 1
    fig = _bar_figure(len(names))
    ax = fig.subplots()
    width = 0.8 / steps
    for t in range(steps):
        heights = [result["firing_rates"][n]["per_step"][t] for n in names]
        ax.bar([i + (t - (steps - 1) / 2) * width for i in range(len(names))], heights, width, label=f"t={t}")
    ax.set_xticks(range(len(names)), names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("firing rate")
    ax.set_title(f"Firing rate per neuron layer and time step (T = {steps})")
    ax.legend(fontsize=7)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_energy(path: PathLike, result: Mapping[str, Any]) -> Path:
    """Energy per image of each Conv2d / Linear layer, coloured by MAC / AC."""
    rows = result["layers"]
    fig = _bar_figure(len(rows))
    ax = fig.subplots()
    colours = {"MAC": "tab:red", "AC": "tab:blue"}
    ax.bar(range(len(rows)), [r["energy_j"] * 1e6 for r in rows], color=[colours[r["kind"]] for r in rows])
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("energy per image (uJ)")
    totals = result["totals"]
    ax.set_title(f"SNN {totals['energy_snn_j'] * 1e6:.2f} uJ vs ANN {totals['energy_ann_j'] * 1e6:.2f} uJ per image")
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colours.items()], fontsize=7)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_learned_settings(path: PathLike, result: Mapping[str, Any]) -> Path:
    """One bar per neuron layer for each learned setting (PLIF's tau, a learned threshold)."""
    learned = result["learned_neuron_settings"]
    names = list(learned)
    keys = list(dict.fromkeys(k for values in learned.values() for k in values))
    fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 2.0), 3.2 * len(keys) + 1.0), layout="constrained")
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        ax.bar(range(len(names)), [learned[n].get(key, math.nan) for n in names], color="tab:purple")
        ax.set_ylabel(key)
        ax.set_xticks(range(len(names)), names if ax is axes[-1] else [""] * len(names), rotation=75, ha="right", fontsize=7)
    fig.suptitle("Learned neuron settings per layer")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def write_evaluation(folder: PathLike, result: Mapping[str, Any], config: Optional[Mapping] = None, checkpoint: Optional[PathLike] = None) -> dict[str, Path]:
    """Write every file of an evaluation folder; returns them by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics": write_metrics(folder / METRICS_FILE, result, config, checkpoint),
        "firing_rates_csv": write_firing_rates_csv(folder / "firing_rates.csv", result),
        "energy_csv": write_energy_csv(folder / "energy.csv", result),
        "firing_rates_png": plot_firing_rates(folder / "firing_rates.png", result),
        "energy_png": plot_energy(folder / "energy.png", result),
    }
    for name, estimate in (result.get("energy") or {}).items():
        files[f"energy_{name}_csv"] = write_energy_model_csv(folder / f"energy_{name}.csv", estimate)
    if result.get("speed"):
        files["speed_csv"] = write_speed_csv(folder / "speed.csv", result["speed"])
    if result.get("learned_neuron_settings"):
        files["learned_png"] = plot_learned_settings(folder / "learned_settings.png", result)
    return files


# ----------------------------------------------------------- terminal table


def _rate(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


_PREFIXES = {-12: "p", -9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G"}


def _si(value: float, unit: str = "") -> str:
    """Three significant digits with an SI prefix: 67.6 pJ, 123 M."""
    exponent = 0 if value == 0 else min(9, max(-12, 3 * math.floor(math.log10(abs(value)) / 3)))
    return f"{value / 10 ** exponent:.3g} {_PREFIXES[exponent]}{unit}".rstrip()


def format_summary(result: Mapping[str, Any]) -> str:
    """A compact terminal report of one evaluation (energies and SOPs per image)."""
    totals = result["totals"]
    ratio = totals["snn_to_ann_energy_ratio"]
    lines = [
        f"samples {result['samples']}  T {result['time_steps']}  "
        f"top-1 {result['top1']:.2f}%  top-{result['top5_k']} {result['top5']:.2f}%  loss {result['loss']:.4f}",
        f"mean firing rate {_rate(result['mean_firing_rate'])}  SOPs/image {_si(totals['sops'])}  "
        f"energy/image SNN {_si(totals['energy_snn_j'], 'J')}  ANN {_si(totals['energy_ann_j'], 'J')}  "
        f"SNN/ANN {'-' if ratio is None else f'{ratio:.4f}'}",
        f"convention: {result['convention']}",
    ]
    for name, estimate in (result.get("energy") or {}).items():
        if name == "sdt":  # the lines above
            continue
        parts = sorted(estimate["by_kind_j"].items(), key=lambda kv: -kv[1])
        lines.append(f"energy/image {name} {_si(estimate['total_j'], 'J')}: "
                     + ", ".join(f"{kind} {_si(j, 'J')}" for kind, j in parts if j))
        lines.append(f"convention ({name}): {estimate['convention']}")
        lines += [f"note ({name}): {note}" for note in estimate.get("notes", [])]
    for key in dict.fromkeys(k for values in (result.get("learned_neuron_settings") or {}).values() for k in values):
        values = [v[key] for v in result["learned_neuron_settings"].values() if key in v]
        lines.append(f"learned {key} over {len(values)} layers: min {min(values):.4g}  mean {sum(values) / len(values):.4g}  "
                     f"max {max(values):.4g}")
    rates = result["firing_rates"]
    if rates:
        width = max(len(n) for n in rates)
        steps = result["time_steps"] or 0
        lines.append(f"{'neuron layer':<{width}}  " + "  ".join(f"{f't{t}':>6}" for t in range(steps)) + "    mean")
        for name, rate in rates.items():
            lines.append(f"{name:<{width}}  " + "  ".join(f"{r:6.4f}" for r in rate["per_step"]) + f"  {rate['mean']:6.4f}")
    return "\n".join(lines)


# ------------------------------------------------------------------ compare


def load_metrics(path: PathLike) -> dict:
    """Read one ``metrics.json`` written by ``write_metrics``, with a clear error otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpikedrivenError(f"{path} is not a readable metrics file ({type(e).__name__}: {e})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
    if missing or data.get("format") != METRICS_FORMAT:
        raise SpikedrivenError(f"{path} is not a spikedriven evaluation metrics file (missing: {', '.join(missing) or 'format'})")
    return data


def find_metrics(path: PathLike) -> list[Path]:
    """``path`` itself if a file, else ``metrics.json`` in it or in its immediate subfolders."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SpikedrivenError(f"{path} does not exist")
    if (path / METRICS_FILE).is_file():
        return [path / METRICS_FILE]
    found = sorted(p for p in path.glob(f"*/{METRICS_FILE}") if p.is_file())
    if not found:
        raise SpikedrivenError(f"no {METRICS_FILE} in {path} or its immediate subfolders; run an evaluation first")
    return found


def _neuron_setting(metrics: Mapping, neuron_key: str, config_key: str) -> Any:
    """From the model's recorded neuron spec (a neuron without the setting has none), else from the run config."""
    neuron = metrics.get("neuron")
    if isinstance(neuron, Mapping):
        return neuron.get(neuron_key)
    config = metrics.get("config")
    return config.get(config_key) if isinstance(config, Mapping) else None


def _compare_row(label: str, path: Path, metrics: Mapping) -> dict:
    totals = metrics["totals"]
    return dict(
        label=label,
        path=str(path),
        mode=_neuron_setting(metrics, "mode", "spike_mode"),
        u_th=_neuron_setting(metrics, "v_threshold", "v_threshold"),
        top1=metrics["top1"],
        mean_firing_rate=metrics["mean_firing_rate"],
        sops=totals["sops"],
        energy_j=totals["energy_snn_j"],
        energy_models={name: e["total_j"] for name, e in (metrics.get("energy") or {}).items()},
        speed=_speed_at_eval_batch(metrics.get("speed") or []),
        overridden=list(metrics.get("overridden_settings") or []),
    )


def _speed_at_eval_batch(rows: Sequence[Mapping]) -> dict:
    """Images/s per path at the largest batch measured (the evaluation batch)."""
    measured = [r for r in rows if r.get("available")]
    if not measured:
        return {}
    batch = max(r["batch"] for r in measured)
    return {r["path"]: r["images_per_s"] for r in measured if r["batch"] == batch} | {"batch": batch}


def _overrides_text(overridden: Sequence) -> str:
    # metrics files of earlier versions list each override as a sentence of its own
    return "; ".join(o if isinstance(o, str) else f"{o['setting']} {o['evaluated_with']} (checkpoint: {o['checkpoint']})"
                     for o in overridden)


def shared_energy_models(rows: Sequence[Mapping]) -> list[str]:
    """The energy models beyond ``sdt`` that every evaluation was priced with, in order."""
    names = [n for n in (rows[0].get("energy_models") or {}) if n != "sdt"] if rows else []
    return [n for n in names if all(n in (r.get("energy_models") or {}) for r in rows)]


def _format_compare(rows: Sequence[Mapping]) -> str:
    models = shared_energy_models(rows)
    paths = [p for p in ("fused", "loop") if any(p in r["speed"] for r in rows)]
    header = ["run", "mode", "u_th", "top-1 %", "mean fr", "SOPs M", "energy uJ (sdt)",
              *(f"{m} uJ" for m in models), *(f"{p} img/s" for p in paths)]

    def speed(r, path):
        return f"{r['speed'][path]:.1f}" if path in r["speed"] else "-"

    body = [
        [
            r["label"], str(r["mode"] or "-") + ("*" if r["overridden"] else ""),
            "-" if r["u_th"] is None else f"{r['u_th']:g}", f"{r['top1']:.2f}",
            _rate(r["mean_firing_rate"]), f"{r['sops'] / 1e6:.2f}", f"{r['energy_j'] * 1e6:.2f}",
            *(f"{r['energy_models'][m] * 1e6:.2f}" for m in models), *(speed(r, p) for p in paths),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line):  # run name left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))

    notes = [f"* evaluated with settings overridden against its checkpoint: {_overrides_text(r['overridden'])} ({r['label']})"
             for r in rows if r["overridden"]]
    batches = {r["speed"]["batch"] for r in rows if r["speed"]}
    if batches:
        notes.append(f"img/s: inference at batch {', '.join(map(str, sorted(batches)))} (median; speed.csv of each "
                     "evaluation holds batch 1, latencies, device and dtype)")
    return "\n".join([fmt(header), *map(fmt, body), *notes])


def short_labels(folders: Sequence[Path]) -> list[str]:
    """What tells the folders apart: their paths without the parts all share at the start and at the end
    (``.../runs/lif-uth1-seed42/eval_last`` and ``.../runs/if-uth1-seed42/eval_last`` -> the run names)."""
    parts = [Path(f).resolve().parts for f in folders]
    if len(parts) == 1:
        return ["/".join(parts[0][-2:])]
    shortest = min(len(p) for p in parts)
    head = next((i for i in range(shortest) if len({p[i] for p in parts}) > 1), shortest)
    tail = next((i for i in range(shortest - head) if len({p[len(p) - 1 - i] for p in parts}) > 1), shortest - head)
    labels = ["/".join(p[head:len(p) - tail]) or p[-1] for p in parts]
    return labels if len(set(labels)) == len(labels) else ["/".join(p[head:]) for p in parts]


def compare_figure(rows: Sequence[Mapping]) -> Figure:
    """Top-1 and SNN energy per run. Top-1 is drawn as points: the gaps studied are tenths of a
    point, and bars on an axis that does not start at zero would make them look large."""
    labels = [r["label"] + ("*" if r["overridden"] else "") for r in rows]
    fig = Figure(figsize=(max(7.0, 1.2 * len(rows) + 3.0), 4.8), layout="constrained")
    acc_ax, energy_ax = fig.subplots(1, 2)
    acc = [r["top1"] for r in rows]
    acc_ax.plot(range(len(rows)), acc, "o", color="tab:green", linestyle="None")
    for i, value in enumerate(acc):
        acc_ax.annotate(f"{value:.2f}", (i, value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    low, high = min(acc), max(acc)
    margin = max(0.5, 0.15 * (high - low))
    acc_ax.set_ylim(max(0.0, low - margin), min(100.0, high + margin) + 0.2)
    acc_ax.set_xlim(-0.5, len(rows) - 0.5)
    acc_ax.set_ylabel("top-1 (%)")
    acc_ax.set_title("test top-1 (axis zoomed on the runs)", fontsize=9)
    energy_ax.bar(range(len(rows)), [r["energy_j"] * 1e6 for r in rows], color="tab:blue")
    energy_ax.set_ylabel("SNN energy per image (uJ)")
    energy_ax.set_title("energy per image (axis from 0)", fontsize=9)
    for ax in (acc_ax, energy_ax):
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=7)
    fig.suptitle(f"{len(rows)} evaluation{'s' if len(rows) > 1 else ''}: accuracy and energy"
                 + (" (* settings overridden against the checkpoint)" if any(r["overridden"] for r in rows) else ""))
    return fig


def plot_compare(path: PathLike, rows: Sequence[Mapping]) -> Path:
    path = Path(path)
    compare_figure(rows).savefig(path, dpi=120)
    return path


def compare(inputs: Sequence[PathLike], out_dir: Optional[PathLike] = None) -> tuple[str, list[dict]]:
    """One table over evaluations, and one over training runs; each input is a metrics file, a folder
    holding one (directly or in an immediate subfolder), or a run folder (ours, or the original code's:
    summary.csv beside config.yaml or args.yaml), whose curve gives best, final and last-10 figures.
    With ``out_dir``, also writes ``compare.png`` there (when there are evaluations)."""
    from .analysis.runs import read_run, runs_table

    def looks_like_run(path: Path) -> bool:  # read_run then says what a damaged one lacks
        return path.is_dir() and any((path / n).is_file() for n in ("summary.csv", "config.yaml", "args.yaml"))

    if not inputs:
        raise SpikedrivenError("compare needs at least one evaluation folder, metrics.json or run folder")
    found, runs = [], []
    for given in inputs:
        if looks_like_run(Path(given)):
            runs.append(read_run(given))
            found += sorted(p for p in Path(given).glob(f"*/{METRICS_FILE}") if p.is_file())  # evaluated, or not
        else:
            found += find_metrics(given)
    labels = short_labels([path.parent for path in found]) if found else []
    rows = [_compare_row(label, path, load_metrics(path)) for label, path in zip(labels, found)]
    if out_dir is not None and rows:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        plot_compare(Path(out_dir) / "compare.png", rows)
    if runs:
        labels = short_labels([run.folder for run in runs])
        for run, label in zip(runs, labels):
            run.label = label
    parts = ([_format_compare(rows)] if rows else []) + (
        ["training runs (from summary.csv, the same figures for every source):\n" + runs_table(runs)] if runs else [])
    return "\n\n".join(parts), rows
