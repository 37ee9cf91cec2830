"""spikedriven compare: evaluations (and run folders' training curves) side by side, as a table and compare.png."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from matplotlib.figure import Figure

from ..errors import SpikedrivenError
from ..plotting import caption, save_png, text_width, wrap
from .reports import METRICS_FILE, _rate, find_metrics, load_metrics

PathLike = Union[str, os.PathLike]

def _neuron_setting(metrics: Mapping, neuron_key: str, config_key: str) -> Any:
    """From the model's recorded neuron spec (a neuron without the setting has none), else from the run config."""
    neuron = metrics.get("neuron")
    if isinstance(neuron, Mapping):
        return neuron.get(neuron_key)
    config = metrics.get("config")
    return config.get(config_key) if isinstance(config, Mapping) else None


def _compare_row(label: str, path: Path, metrics: Mapping, view: str = "-") -> dict:
    totals = metrics["totals"]
    config = metrics.get("config")
    return dict(
        label=label,
        path=str(path),
        checkpoint=view,
        checkpoint_epoch=metrics.get("checkpoint_epoch"),
        # an evaluation of an earlier version could only be of sdt
        model=config.get("model", "sdt") if isinstance(config, Mapping) else None,
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
    header = ["run", "checkpoint", "epoch", "model", "mode", "u_th", "top-1 %", "mean fr", "SOPs M", "energy uJ (sdt)",
              *(f"{m} uJ" for m in models), *(f"{p} img/s" for p in paths)]

    def speed(r, path):
        return f"{r['speed'][path]:.1f}" if path in r["speed"] else "-"

    body = [
        [
            r["label"], r.get("checkpoint") or "-", _epoch(r), r["model"] or "-",
            str(r["mode"] or "-") + ("*" if r["overridden"] else ""),
            "-" if r["u_th"] is None else f"{r['u_th']:g}", f"{r['top1']:.2f}",
            _rate(r["mean_firing_rate"]), f"{r['sops'] / 1e6:.2f}", f"{r['energy_j'] * 1e6:.2f}",
            *(f"{r['energy_models'][m] * 1e6:.2f}" for m in models), *(speed(r, p) for p in paths),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line):  # words left-aligned, numbers right-aligned
        return "  ".join(c.rjust(w) if i == 2 or i > 4 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))

    notes = [f"* evaluated with settings overridden against its checkpoint: {_overrides_text(r['overridden'])} ({r['label']})"
             for r in rows if r["overridden"]]
    batches = {r["speed"]["batch"] for r in rows if r["speed"]}
    if batches:
        notes.append(f"img/s: inference at batch {', '.join(map(str, sorted(batches)))} (median; speed.csv of each "
                     "evaluation holds batch 1, latencies, device and dtype)")
    return "\n".join([fmt(header), *map(fmt, body), *notes])


def _epoch(row: Mapping) -> str:
    epoch = row.get("checkpoint_epoch")
    return "-" if epoch is None else str(epoch)


def _subject(metrics_path: Path, metrics: Mapping) -> tuple[Path, str]:
    """What an evaluation is of: the run folder and the checkpoint's view of it (``eval_best`` of a run is
    that run, ``best``; ``eval_last-288px`` is ``last-288px``); a folder of another name is itself, named by
    its checkpoint file."""
    folder = metrics_path.parent
    if folder.name.startswith("eval_") and len(folder.name) > len("eval_"):
        return folder.parent, folder.name[len("eval_"):]
    checkpoint = metrics.get("checkpoint")
    return folder, Path(checkpoint).name.split(".")[0] if checkpoint else "-"


def evaluation_labels(paths: Sequence[Path], metrics: Sequence[Mapping]) -> list[tuple[str, str]]:
    """Per evaluation, what tells its run apart from the others' (``short_labels``) and which checkpoint."""
    subjects = [_subject(p, m) for p, m in zip(paths, metrics)]
    folders = list(dict.fromkeys(folder.resolve() for folder, _ in subjects))
    names = dict(zip(folders, short_labels(folders)))
    return [(names[folder.resolve()], view) for folder, view in subjects]


def short_labels(folders: Sequence[Path]) -> list[str]:
    """What tells the folders apart: their paths without the parts all share at the start and at the end
    (``.../runs/lif-uth1-seed42/eval_last`` and ``.../runs/if-uth1-seed42/eval_last`` -> the run names)."""
    parts = [Path(f).resolve().parts for f in folders]
    if not parts:
        return []
    if len(parts) == 1:
        return ["/".join(parts[0][-2:])]
    shortest = min(len(p) for p in parts)
    head = next((i for i in range(shortest) if len({p[i] for p in parts}) > 1), shortest)
    tail = next((i for i in range(shortest - head) if len({p[len(p) - 1 - i] for p in parts}) > 1), shortest - head)
    labels = ["/".join(p[head:len(p) - tail]) or p[-1] for p in parts]
    return labels if len(set(labels)) == len(labels) else ["/".join(p[head:]) for p in parts]


def _tick_label(row: Mapping, views: bool) -> str:
    return row["label"] + (f" ({row['checkpoint']})" if views else "") + ("*" if row["overridden"] else "")


def _compare_caption(rows: Sequence[Mapping]) -> str:
    """What the figure shows beyond its axes: where the runs are, which checkpoint, neurons, energy model."""
    folders = [Path(r["path"]).resolve().parent for r in rows]
    common = os.path.commonpath(folders) if len(rows) > 1 else str(folders[0])
    views = sorted({str(r.get("checkpoint") or "-") for r in rows})
    neurons = {(r["mode"], r["u_th"]) for r in rows}
    if len(neurons) == 1:
        mode, u_th = next(iter(neurons))
        neuron = f"neuron {mode or '-'}" + ("" if u_th is None else f" u_th {u_th:g}")
    else:
        neuron = "neurons per run in the table"
    return caption([f"under {common}", f"checkpoint{'s' if len(views) > 1 else ''}: {', '.join(views)}", neuron,
                    "energy model sdt (the SDT paper's convention)"])


def compare_figure(rows: Sequence[Mapping]) -> Figure:
    """Top-1 and SNN energy per run. Top-1 is drawn as points: the gaps studied are tenths of a
    point, and bars on an axis that does not start at zero would make them look large."""
    several_views = len({r.get("checkpoint") for r in rows}) > 1
    texts = [_tick_label(r, several_views) for r in rows]
    chars = min(32, max(len(t) for t in texts))  # longer labels take two lines or more
    # two panels of categories as wide as their labels; past 16 inches the labels turn upright instead
    width = 2 * len(rows) * (text_width(chars, 7) + 0.25) + 2.0
    upright = width > 16.0
    width = min(max(8.0, width), 16.0)
    labels = [wrap(t, text_width(40 if upright else chars, 7), 7) for t in texts]
    fig = Figure(figsize=(width, 5.2 + (text_width(40, 7) if upright else 0.0)), layout="constrained")
    acc_ax, energy_ax = fig.subplots(1, 2)
    acc = [r["top1"] for r in rows]
    acc_ax.plot(range(len(rows)), acc, "o", color="tab:green", linestyle="None")
    for i, value in enumerate(acc):  # beside its point: above it, a value near the top would run into the title
        acc_ax.annotate(f"{value:.2f}", (i, value), textcoords="offset points", xytext=(6, 0), ha="left",
                        va="center", fontsize=7)
    low, high = min(acc), max(acc)
    margin = max(0.5, 0.15 * (high - low))
    acc_ax.set_ylim(max(0.0, low - margin), min(100.0, high + margin) + 0.2)
    acc_ax.set_xlim(-0.5, len(rows) - 0.5)
    acc_ax.set_ylabel("top-1 (%)")
    acc_ax.set_title("test top-1 (axis zoomed on the runs)", fontsize=9)
    energy_ax.bar(range(len(rows)), [r["energy_j"] * 1e6 for r in rows], color="tab:blue")
    energy_ax.set_ylabel("SNN energy per image (uJ)")
    energy_ax.set_title("energy per image, sdt model (axis from 0)", fontsize=9)
    for ax in (acc_ax, energy_ax):
        ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=90 if upright else 0)
    title = (f"{len(rows)} evaluation{'s' if len(rows) > 1 else ''}: accuracy and energy"
             + (" (* settings overridden against the checkpoint)" if any(r["overridden"] for r in rows) else ""))
    fig.suptitle(wrap(f"{title}\n{_compare_caption(rows)}", width - 0.4, 10), fontsize=10)
    return fig


def plot_compare(path: PathLike, rows: Sequence[Mapping]) -> Path:
    return save_png(compare_figure(rows), path)


def _run_folders(inputs: Sequence[PathLike], labels_file: Optional[PathLike]) -> tuple[list, list[Path]]:
    """The inputs that are runs (as RunSpecs, labelled from ``labels_file``) and the metrics files of the rest
    and of the runs' evaluated subfolders."""
    from .run_labels import parse_run_argument, resolve_runs

    def looks_like_run(path: Path) -> bool:  # read_run then says what a damaged one lacks
        return path.is_dir() and (any((path / n).is_file() for n in ("config.yaml", "args.yaml"))
                                  or any(path.glob("summary*.csv")) or any(path.glob("*.log")))

    run_inputs, found = [], []
    for given in map(str, inputs):
        spec = parse_run_argument(given)
        if spec.neuron is None and len(spec.folders) == 1 and not looks_like_run(spec.folders[0]):
            found += find_metrics(given)
            continue
        run_inputs.append(given)
        found += sorted(p for f in spec.folders for p in f.glob(f"*/{METRICS_FILE}") if p.is_file())  # evaluated
    specs = resolve_runs(run_inputs, labels_file) if run_inputs or labels_file is not None else []
    return specs, found


def read_runs(specs: Sequence) -> list:
    """The runs, each named by what tells its folders apart (``a+b`` for a run in two folders), unless the
    labels file named it."""
    from .runs import read_run

    runs = [read_run(spec.folders, label=spec.name, neuron=spec.neuron) for spec in specs]
    names = iter(short_labels([f for run in runs for f in run.folders]) if runs else [])
    for run, spec in zip(runs, specs):
        parts = [next(names) for _ in run.folders]
        run.label = spec.name or "+".join(parts)
    return runs


def compare(inputs: Sequence[PathLike], out_dir: Optional[PathLike] = None,
            labels_file: Optional[PathLike] = None) -> tuple[str, list[dict]]:
    """One table over evaluations, and one over training runs; each input is a metrics file, a folder
    holding one (directly or in an immediate subfolder), or a run (``run_labels.parse_run_argument``: a run
    folder, ours or the original code's, optionally labelled, or several folders as one run), whose curve
    gives best, final and last-10 figures. ``labels_file`` labels the runs (``run_labels``); with no run among
    the inputs, its runs are the runs. With ``out_dir``, also writes ``compare.png`` there (when there are
    evaluations)."""
    from .runs import runs_table

    if not inputs and labels_file is None:
        raise SpikedrivenError("compare needs at least one evaluation folder, metrics.json or run folder")
    specs, found = _run_folders(inputs, labels_file)
    runs = read_runs(specs)
    metrics = [load_metrics(path) for path in found]
    rows = [_compare_row(label, path, m, view)
            for (label, view), path, m in zip(evaluation_labels(found, metrics), found, metrics)]
    if out_dir is not None and rows:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        plot_compare(Path(out_dir) / "compare.png", rows)
    parts = ([_format_compare(rows)] if rows else []) + (
        ["training runs (from their summary files, the same figures for every source):\n" + runs_table(runs)]
        if runs else [])
    return "\n\n".join(parts), rows
