"""The published table regenerated from the study's run folders, with the statistics it lacked.

The publication reported, per setting (neuron, u_th), the best of a run's per-epoch test evaluations, and
for a setting it ran twice the better of the two runs (SPEC 13.3). ``setting_rows`` computes that figure
("as published") from labelled runs and puts beside it what a fair comparison needs: over the runs of each
setting the mean and sample std of the best-epoch, the final and the last-10-epoch top-1, and the difference
of mean final top-1 to a baseline setting with its 95 % interval and verdict, worded as the study's table
(``study.tables``) words them. ``write_runs_table`` writes it as runs_table.md and runs_table.csv.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import ConfigError
from . import statistics
from .statistics import interval_text, last_text, p_text, pm_text
from .runs import LAST_N, RunCurve, runs_markdown

# The statistics module speaks of seeds; the runs of a published folder are counted as runs.
_VERDICTS = {statistics.ONE_SEED: "one run: no interval",
             statistics.BASELINE_ONE_SEED: "baseline has one run: no interval",
             statistics.NO_SPREAD: "no spread between runs: no interval"}


def setting_of(run: RunCurve) -> tuple[str, Optional[float]]:
    fix = f"label it: {run.folder}:MODE@U_TH on the command line, or in a --labels file"
    if run.mode is None:
        raise ConfigError(f"run {run.label} records no neuron, so its setting is unknown; {fix}")
    if not run.threshold_recorded and "v_threshold" not in run.from_label:
        raise ConfigError(f"run {run.label} records spike_mode {run.mode} but not its threshold; {fix}")
    return run.mode, run.v_threshold


def _by_setting(runs: Sequence[RunCurve]) -> dict[tuple[str, Optional[float]], list[RunCurve]]:
    groups: dict = {}
    for run in runs:
        groups.setdefault(setting_of(run), []).append(run)
    modes = list(dict.fromkeys(mode for mode, _ in groups))  # modes as first given, thresholds ascending
    order = sorted(groups, key=lambda s: (modes.index(s[0]), -1.0 if s[1] is None else s[1]))
    return {key: groups[key] for key in order}


def _mean_std(name: str, values: Sequence[float]) -> dict:
    mean, std = statistics.mean_std(values)
    return {f"{name}_mean": mean, f"{name}_std": std}


def _as_published(runs: Sequence[RunCurve]) -> dict:
    """The best run's best epoch, and which runs it was picked from."""
    ranked = sorted(runs, key=lambda r: -r.best[0])
    notes = [] if len(runs) == 1 else [f"best of {len(runs)} runs: "
                                       + ", ".join(f"{r.best[0]:.2f} ({r.label})" for r in ranked)]
    if ranked[0].best_replaced:
        notes.append(f"from a row of {ranked[0].label} that a later segment trained again; the joined curve's best "
                     f"is {ranked[0].curve_best[0]:.2f} (epoch {ranked[0].curve_best[1]})")
    note = "; ".join(notes)
    return {"as_published_top1": ranked[0].best[0], "as_published_epoch": ranked[0].best[1],
            "as_published_run": ranked[0].label, "as_published_note": note}


def _setting_row(mode: str, threshold: Optional[float], runs: Sequence[RunCurve]) -> dict:
    used = [min(LAST_N, len(r.eval_top1)) for r in runs]
    models = sorted({r.model for r in runs if r.model})
    counts = sorted({r.param_count for r in runs if r.param_count is not None})
    return {
        "model": ", ".join(models) or None, "mode": mode, "v_threshold": threshold,
        "threshold_from_label": any("v_threshold" in r.from_label for r in runs),
        "seeds": len(runs), "seed_list": " ".join("?" if r.seed is None else str(r.seed) for r in runs),
        "run_list": "; ".join(r.label for r in runs),
        **_as_published(runs),
        **_mean_std("final_top1", [r.final for r in runs]), **_mean_std("best_top1", [r.best[0] for r in runs]),
        **_mean_std("last10_top1", [r.last_mean(LAST_N) for r in runs]), "last10_epochs": min(used),
        "best_picked_on": "test", "param_count": counts[0] if len(counts) == 1 else None,
    }


def _comparison(row: dict, base: Optional[dict], finals: dict) -> dict:
    if base is None or base is row:
        verdict = "baseline" if base is row else "no baseline among the runs"
        return {"vs_baseline": None, "vs_baseline_low": None, "vs_baseline_high": None, "p_value": None,
                "test": None, "verdict": verdict}
    values, seeds = finals[id(row)]
    base_values, base_seeds = finals[id(base)]
    c = statistics.compare_to_baseline(values, base_values, seeds, base_seeds)
    return {"vs_baseline": c.difference, "vs_baseline_low": c.low, "vs_baseline_high": c.high,
            "p_value": c.p_value, "test": c.test, "verdict": _VERDICTS.get(c.verdict, c.verdict)}


def setting_rows(runs: Sequence[RunCurve], baseline: tuple[str, Optional[float]] = ("lif", 1.0)) -> list[dict]:
    """One row per setting (mode, v_threshold) over its runs; every run must record or be labelled with
    its neuron and threshold. Columns named as ``study.tables.collect`` names them where they mean the
    same (``seeds`` counts the runs), plus ``as_published_*``, ``run_list``, ``threshold_from_label``."""
    if not runs:
        raise ConfigError("there are no runs to tabulate; give run folders or a --labels file")
    rows, finals = [], {}
    for (mode, threshold), group in _by_setting(runs).items():
        row = _setting_row(mode, threshold, group)
        seeds = [r.seed for r in group]
        finals[id(row)] = ([r.final for r in group], None if None in seeds else seeds)
        rows.append(row)
    base = next((r for r in rows if (r["mode"], r["v_threshold"]) == tuple(baseline)), None)
    for row in rows:
        row.update(_comparison(row, base, finals))
    return rows


def _title(mode: str) -> str:
    from ..neurons import neuron_class

    return neuron_class(mode).title or mode


def _setting_label(mode: str, threshold: Optional[float]) -> str:
    return _title(mode) + ("" if threshold is None else f" u_th={threshold:g}")


def _cells(row: dict, note: Optional[int]) -> list[str]:
    threshold = "-" if row["v_threshold"] is None else f"{row['v_threshold']:g}"
    published = f"{row['as_published_top1']:.2f} ({row['as_published_epoch']})" + (f" [{note}]" if note else "")
    return [row["model"] or "-", _title(row["mode"]), threshold + (" (label)" if row["threshold_from_label"] else ""),
            str(row["seeds"]), published, pm_text(row["final_top1_mean"], row["final_top1_std"]),
            pm_text(row["best_top1_mean"], row["best_top1_std"]), pm_text(row["last10_top1_mean"], row["last10_top1_std"]),
            interval_text(row), p_text(row), row["test"] or "-", row["verdict"]]


def runs_table_markdown(rows: Sequence[dict], runs: Sequence[RunCurve],
                        baseline: tuple[str, Optional[float]] = ("lif", 1.0)) -> str:
    """The rows as Markdown, with the footnotes of settings run several times and a table of the runs."""
    last = last_text(min(r["last10_epochs"] for r in rows))
    header = ["model", "neuron", "u_th", "runs", "as published: best top-1 (epoch)", "final top-1",
              "best-epoch top-1 (picked on test set)", f"mean of {last}", "Δ final [95 % CI]", "p", "test", "verdict"]
    numbered = [r for r in rows if r["as_published_note"]]
    lines = [
        "# The published table, regenerated from its runs", "",
        ("Top-1 in %, from each run's summary files. As published: the best of a run's per-epoch evaluations on the "
        "test set, which doubled as validation set; for a setting run several times, the best over its runs (as "
        f"the publication reported it). Then, over the runs of each setting, mean ± sample std: final = last "
        f"epoch; best epoch; {last} = the mean of the {last}' evaluations, per run, then over runs. Δ final: the "
        f"difference of mean final top-1 to the baseline, {_setting_label(*baseline)}, with its 95 % confidence "
        "interval and p-value (a paired t-test on per-seed differences when both ran the same seeds, else "
        "Welch's t-test); \"within noise\" when the interval contains 0; a setting with one run has no interval."),
        "", "| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * 6 + "---|" * 3]
    lines += ["| " + " | ".join(_cells(r, numbered.index(r) + 1 if r in numbered else None)) + " |" for r in rows]
    notes = [f"[{i}] {r['as_published_note']}" for i, r in enumerate(numbered, start=1)]
    if any(r["threshold_from_label"] for r in rows):
        notes.append("(label): the threshold comes from the run's label; the run's files do not record it.")
    lines += ([""] + [f"{n}  " for n in notes] if notes else []) + ["", "## The runs", "", runs_markdown(runs).rstrip()]
    return "\n".join(lines) + "\n"


def runs_table_csv(rows: Sequence[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_runs_table(runs: Sequence[RunCurve], out_dir: Union[str, Path],
                     baseline: tuple[str, Optional[float]] = ("lif", 1.0)) -> tuple[str, list[dict]]:
    """runs_table.md and runs_table.csv in ``out_dir``; returns the Markdown and the rows."""
    from ..atomic import write_text_atomic

    rows = setting_rows(runs, baseline)
    markdown = runs_table_markdown(rows, runs, baseline)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "runs_table.md", markdown)
    write_text_atomic(out_dir / "runs_table.csv", runs_table_csv(rows))
    return markdown, rows
