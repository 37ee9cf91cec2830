"""Writing an evaluation folder (compare.py puts several side by side).

An evaluation folder holds ``metrics.json`` (everything, machine-readable),
``firing_rates.csv``, ``energy.csv``, ``firing_rates.png`` and ``energy.png``, and
``energy_<model>.csv`` per energy model (and ``energy_<model>_expanded.csv`` for a model
with multi-level spikes: its spikes run as binary ones).
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

from ..atomic import atomic_write, write_text_atomic
from ..errors import SpikedrivenError
from ..plotting import caption, save_png, text_width, wrap

PathLike = Union[str, os.PathLike]

METRICS_FORMAT = "spikedriven-eval"
METRICS_VERSION = 1
METRICS_FILE = "metrics.json"
REQUIRED_KEYS = ("top1", "mean_firing_rate", "firing_rates", "layers", "totals")

__all__ = [
    "find_metrics",
    "format_energy_views",
    "format_summary",
    "load_metrics",
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


def _neuron_text(result: Mapping[str, Any], config: Mapping) -> Optional[str]:
    """The neuron evaluated: the model's recorded spec, else the run config's mode and threshold."""
    spec = result.get("neuron")
    if spec:  # a neuron without a threshold has none, whatever the run config says
        mode, u_th = spec.get("mode"), spec.get("v_threshold")
    else:
        mode, u_th = config.get("spike_mode"), config.get("v_threshold")
    if mode is None:
        return None
    return f"neuron {mode}" + ("" if u_th is None else f" u_th {u_th:g}")


def evaluation_caption(result: Mapping[str, Any], config: Optional[Mapping] = None,
                       checkpoint: Optional[PathLike] = None) -> str:
    """What an evaluation is of, in one line: run, checkpoint (and its epoch), model, neuron, data.
    ``config`` and ``checkpoint`` default to those a loaded metrics file holds."""
    config = config if config is not None else (result.get("config") or {})
    checkpoint = checkpoint if checkpoint is not None else result.get("checkpoint")
    epoch = result.get("checkpoint_epoch")
    where = None
    if checkpoint:
        path = Path(checkpoint)
        where = f"run {path.parent.name} | checkpoint {path.name}" + ("" if epoch is None else f" (epoch {epoch})")
    data = config.get("dataset")
    split = result.get("split")
    return caption([where, config.get("model"), _neuron_text(result, config),
                    f"{data.split('/')[-1]} {split or ''}".strip() if data else None,
                    f"{result['samples']} images" if result.get("samples") else None])


def _bar_figure(n_bars: int) -> Figure:
    # widen with the number of layers: upright names need a line each, and a little air between
    return Figure(figsize=(max(6.0, 0.3 * n_bars + 2.0), 5.4), layout="constrained")


def _title(fig: Figure, ax, text: str, about: str) -> None:
    """The plot's title over the axes, what it is of on the lines under it, wrapped to the figure."""
    ax.set_title(wrap(text + (f"\n{about}" if about else ""), fig.get_figwidth() - 0.4, 10), fontsize=10)


def _layer_ticks(ax, names: Sequence[str]) -> None:
    # upright, not slanted: a slanted name's box covers its neighbours', and a long name still reads
    ax.set_xticks(range(len(names)), [wrap(n, text_width(36, 7), 7) for n in names], rotation=90, fontsize=7)


def plot_firing_rates(path: PathLike, result: Mapping[str, Any], about: Optional[str] = None) -> Path:
    """Grouped bars: one group per neuron layer, one bar per time step."""
    return save_png(firing_rates_figure(result, about), path)


def firing_rates_figure(result: Mapping[str, Any], about: Optional[str] = None) -> Figure:
    names = list(result["firing_rates"])
    steps = result["time_steps"] or 1
    fig = _bar_figure(len(names))
    ax = fig.subplots()
    width = 0.8 / steps
    for t in range(steps):
        heights = [result["firing_rates"][n]["per_step"][t] for n in names]
        ax.bar([i + (t - (steps - 1) / 2) * width for i in range(len(names))], heights, width, label=f"t={t}")
    _layer_ticks(ax, names)
    ax.set_ylabel("firing rate")
    _title(fig, ax, f"Firing rate per neuron layer and time step (T = {steps})",
           evaluation_caption(result) if about is None else about)
    ax.legend(fontsize=7)
    return fig


def _energy_model_text(result: Mapping[str, Any]) -> str:
    constants = result.get("energy_constants") or {}
    if "e_mac_j" not in constants:
        return "energy model sdt"
    return f"energy model sdt: {constants['e_mac_j'] * 1e12:g} pJ per MAC, {constants['e_ac_j'] * 1e12:g} pJ per AC"


def plot_energy(path: PathLike, result: Mapping[str, Any], about: Optional[str] = None) -> Path:
    """Energy per image of each Conv2d / Linear layer, coloured by MAC / AC."""
    return save_png(energy_figure(result, about), path)


def energy_figure(result: Mapping[str, Any], about: Optional[str] = None) -> Figure:
    rows = result["layers"]
    fig = _bar_figure(len(rows))
    ax = fig.subplots()
    colours = {"MAC": "tab:red", "AC": "tab:blue"}
    ax.bar(range(len(rows)), [r["energy_j"] * 1e6 for r in rows], color=[colours[r["kind"]] for r in rows])
    _layer_ticks(ax, [r["name"] for r in rows])
    ax.set_ylabel("energy per image (uJ)")
    totals = result["totals"]
    about = caption([evaluation_caption(result) if about is None else about, _energy_model_text(result)])
    _title(fig, ax, f"SNN {totals['energy_snn_j'] * 1e6:.2f} uJ vs ANN {totals['energy_ann_j'] * 1e6:.2f} uJ per image",
           about)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colours.items()], fontsize=7)
    return fig


def plot_learned_settings(path: PathLike, result: Mapping[str, Any], about: Optional[str] = None) -> Path:
    """One bar per neuron layer for each learned setting (PLIF's tau, a learned threshold)."""
    return save_png(learned_settings_figure(result, about), path)


def learned_settings_figure(result: Mapping[str, Any], about: Optional[str] = None) -> Figure:
    learned = result["learned_neuron_settings"]
    names = list(learned)
    keys = list(dict.fromkeys(k for values in learned.values() for k in values))
    fig = Figure(figsize=(max(6.0, 0.3 * len(names) + 2.0), 3.2 * len(keys) + 2.4), layout="constrained")
    axes = fig.subplots(len(keys), 1, squeeze=False, sharex=True)[:, 0]
    for ax, key in zip(axes, keys):
        ax.bar(range(len(names)), [learned[n].get(key, math.nan) for n in names], color="tab:purple")
        ax.set_ylabel(key)
    _layer_ticks(axes[-1], names)  # shared: the upper panels show none
    about = evaluation_caption(result) if about is None else about
    fig.suptitle(wrap("Learned neuron settings per layer" + (f"\n{about}" if about else ""), fig.get_figwidth() - 0.4,
                      10), fontsize=10)
    return fig


def write_evaluation(folder: PathLike, result: Mapping[str, Any], config: Optional[Mapping] = None, checkpoint: Optional[PathLike] = None) -> dict[str, Path]:
    """Write every file of an evaluation folder; returns them by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    about = evaluation_caption(result, config or {}, checkpoint)
    files = {
        "metrics": write_metrics(folder / METRICS_FILE, result, config, checkpoint),
        "firing_rates_csv": write_firing_rates_csv(folder / "firing_rates.csv", result),
        "energy_csv": write_energy_csv(folder / "energy.csv", result),
        "firing_rates_png": plot_firing_rates(folder / "firing_rates.png", result, about),
        "energy_png": plot_energy(folder / "energy.png", result, about),
    }
    for name, estimate in (result.get("energy") or {}).items():
        files[f"energy_{name}_csv"] = write_energy_model_csv(folder / f"energy_{name}.csv", estimate)
    for name, estimate in (result.get("energy_expanded") or {}).items():  # multi-level spikes as binary ones
        path = folder / f"energy_{name}_expanded.csv"
        files[f"energy_{name}_expanded_csv"] = write_energy_model_csv(path, estimate)
    if result.get("speed"):
        files["speed_csv"] = write_speed_csv(folder / "speed.csv", result["speed"])
    if result.get("learned_neuron_settings"):
        files["learned_png"] = plot_learned_settings(folder / "learned_settings.png", result, about)
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
    if result.get("input"):  # metrics of earlier versions do not say
        lines.append(result["input"]["line"])
    for name, estimate in (result.get("energy") or {}).items():
        if name == "sdt":  # the lines above
            continue
        parts = sorted(estimate["by_kind_j"].items(), key=lambda kv: -kv[1])
        lines.append(f"energy/image {name} {_si(estimate['total_j'], 'J')}: "
                     + ", ".join(f"{kind} {_si(j, 'J')}" for kind, j in parts if j))
        lines.append(f"convention ({name}): {estimate['convention']}")
        lines += [f"note ({name}): {note}" for note in estimate.get("notes", [])]
    if result.get("energy_expanded"):
        lines += format_energy_views(result)
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


def format_energy_views(result: Mapping[str, Any]) -> list[str]:
    """The energy per image of a model with multi-level spikes in its two views, a table each: the energy
    models as rows, the total and its parts by kind as columns, the same columns in both so they compare."""
    views = result["energy_views"]
    tables = [(views["integer"], result["energy"]), (views["expanded"], result["energy_expanded"])]
    kinds = [k for k in dict.fromkeys(k for _, energy in tables for e in energy.values() for k in e["by_kind_j"])
             if any(e["by_kind_j"].get(k) for _, energy in tables for e in energy.values())]
    width = max(len("model"), *(len(name) for name in result["energy"]))
    levels = ", ".join(str(n) for n in views["levels"])
    lines = [f"energy/image of the multi-level spikes (levels {levels}) in two views:"]
    for words, energy in tables:
        lines.append(f"  {words}")
        lines.append(f"    {'model':<{width}}" + "".join(f"{column:>11}" for column in ("total", *kinds)))
        for name, e in energy.items():
            cells = [e["total_j"], *(e["by_kind_j"].get(k, 0.0) for k in kinds)]
            lines.append(f"    {name:<{width}}" + "".join(f"{_si(j, 'J') if j else '-':>11}" for j in cells))
    return lines


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


