"""A study's tables: one row per setting over its seeds (accuracy, the comparison with the baseline, cost per
image), as results.csv, results.md and results.tex."""

from __future__ import annotations

import csv
import json
import logging
import statistics
from typing import TYPE_CHECKING, Optional, Sequence


from ..analysis.published import setting_of, setting_rows
from ..analysis.runs import RunCurve, runs_markdown
from ..analysis.statistics import (Comparison, compare_to_baseline, interval_text, last_mean, last_text, latex_table,
                                   mean_std, p_text, pm_text)
from ..atomic import atomic_write, write_text_atomic
from ..config import Config
from ..errors import SpikedrivenError
from ..models import architecture_of

from ..engine.run_folder import read_summary_rows
from .plan import Baseline, group_text, neuron_title, size_text
from .figures import curves_figure, firing_figure, tradeoff_figure

if TYPE_CHECKING:
    from .runner import Study

log = logging.getLogger("spikedriven.study")
DEFAULT_BASELINE = Baseline()  # LIF at u_th 1 (frozen: one instance serves as every default)


def collect(study: Study) -> list[dict]:
    """One row per (model, mode, threshold) over the seeds that finished, with the comparison to the baseline
    neuron in the same model."""
    rows, finals, planned = [], {}, {}
    for (model, mode, thr), done in study.done_by_setting().items():
        planned[(model, mode, thr)] = done[0]
        cfg = study.configs[done[0]]
        res = [json.loads((study.run_dir(r) / "results.json").read_text()) for r in done]
        met = [json.loads((study.eval_dir(r) / "metrics.json").read_text()) for r in done]
        final = [x.get("final_test_top1", x["final_top1"]) for x in res]
        best = [x.get("best_test_top1", x["best_top1"]) for x in res]
        last = [last_epochs_mean(_summary_epochs(study.run_dir(r)), study.configs[r].warmup_epochs) for r in done]
        finals[(model, mode, thr)] = (final, [r.seed for r in done])
        row = {
            "model": model, "size": group_text(cfg, done[0]),
            **dict(done[0].variant), "mode": mode, "v_threshold": thr, "seeds": len(done), "seed_list": " ".join(str(r.seed) for r in done),
            **_mean_std_columns("final_top1", final),
            "final_top1_per_seed": ", ".join(f"{value:.2f} ({r.seed})" for value, r in zip(final, done)),
            **_mean_std_columns("best_top1", best),
            **_mean_std_columns("last10_top1", [value for value, _, _ in last]),
            "last10_epochs": min(n for _, n, _ in last),
            "last10_warmup_epochs": max(w for _, _, w in last),
            "best_picked_on": res[0]["eval_set"],
            "mean_firing_rate": statistics.fmean(m["mean_firing_rate"] for m in met),
            "sops_per_image": statistics.fmean(m["totals"]["sops"] for m in met),
        }
        for model in study.evaluation.models:
            row.update(_mean_std_columns(f"energy_{model}_uj", [m["energy"][model]["total_j"] * 1e6 for m in met]))
        if study.evaluation.speed:
            row.update(_speed_columns(met))
        row["published_best_top1"] = published_top1(cfg, mode, thr)
        rows.append(row)
    for row in rows:
        setting = (row["model"], row["mode"], row["v_threshold"])
        against = study.baseline.setting_for(planned[setting])
        baseline = finals.get(against)
        if baseline is None:
            comparison = None
        elif against == setting:
            comparison = "baseline"
        else:
            values, seeds = finals[setting]
            comparison = compare_to_baseline(values, baseline[0], seeds, baseline[1])
        row.update(_comparison_columns(comparison))
    return rows


def write_tables(study: Study) -> list[dict]:
    rows = collect(study)
    if not rows:
        raise SpikedrivenError(f"no finished runs in {study.folder} to tabulate")
    with atomic_write(study.folder / "results.csv", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # the header describes the runs as they were trained (the stale check made them agree with the plan)
    described = study.recorded_config(next(r for r in study.runs if study.is_done(r)))
    first = next(iter(study.done_by_setting().values()))[0]
    sizes = list(dict.fromkeys(size_text(study.configs[runs[0]]) for runs in study.done_by_setting().values()))
    varied = list(dict.fromkeys(key for run in study.runs for key, _ in run.variant))
    sizes[-1] += f", varying {', '.join(varied)}" if varied else ""
    conventions = json.loads((study.eval_dir(first) / "metrics.json").read_text())["energy"]
    conventions = {m: conventions[m]["convention"] for m in study.evaluation.models}
    write_text_atomic(study.folder / "results.md", format_markdown(rows, described, study.baseline, conventions,
                                                                  study.other_runs, sizes, varied))
    write_text_atomic(study.folder / "results.tex", format_latex(rows, described, study.baseline, sizes))
    curves_figure(study).savefig(study.folder / "curves.png", dpi=120)
    firing_figure(study).savefig(study.folder / "firing.png", dpi=120)
    tradeoff_figure(rows, study.evaluation.models, study.folder.name).savefig(study.folder / "tradeoff.png", dpi=120)
    names = ("results.md", "results.tex", "results.csv", "curves.png", "firing.png", "tradeoff.png")
    log.info("results: %s", ", ".join(str(study.folder / n) for n in names))
    return rows


def given_run_rows(runs: Sequence[RunCurve], baseline: Baseline) -> list[dict]:
    """The given runs whose neuron is recorded or labelled, one row per setting (``analysis.published``),
    compared with the study's baseline neuron among them (LIF u_th 1 when the study's baseline is a varied key)."""
    placed = []
    for run in runs:
        try:
            setting_of(run)
        except SpikedrivenError:  # no neuron known: the per-run table below lists it
            continue
        placed.append(run)
    neuron = (baseline.mode, baseline.v_threshold) if not baseline.variant else ("lif", 1.0)
    return setting_rows(placed, neuron) if placed else []


def size_label(cfg: Config) -> str:
    """The model as papers name it: 'sdt 2-256'."""
    return architecture_of(cfg.model).size_label(cfg.model, cfg.model_settings())


def published_top1(cfg: Config, mode: str, v_threshold: Optional[float]) -> Optional[float]:
    """The publication's best-epoch top-1 for this setting, where its model declares one for this dataset,
    size and T (for comparison only: the study's paper for SDT 2-256 on CIFAR, SPEC section 1)."""
    table = architecture_of(cfg.model).published.get((cfg.dataset, size_label(cfg), cfg.time_steps), {})
    return table.get((mode, v_threshold))


LAST_EPOCHS = 10  # the mean of the last epochs' top-1, a steadier figure than the final epoch alone


def last_epochs_mean(epochs: Sequence[tuple[int, float]], warmup_epochs: int,
                     n: int = LAST_EPOCHS) -> tuple[float, int, int]:
    """The mean top-1 of the last ``n`` epochs after the warm-up (of fewer, when fewer follow it), how many
    epochs it averaged, and how many of those are warm-up epochs: none, unless the run ended inside its
    warm-up, which leaves only warm-up epochs to average. ``epochs``: (epoch, top-1) in order."""
    after = [top1 for epoch, top1 in epochs if epoch >= warmup_epochs]
    if after:
        return (*last_mean(after, n), 0)
    mean, used = last_mean([top1 for _, top1 in epochs], n)
    return mean, used, used


def _summary_epochs(run_dir) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r["eval_top1"])) for r in read_summary_rows(run_dir)]


def _mean_std_columns(name: str, values: list[float]) -> dict:
    mean, std = mean_std(values)
    return {f"{name}_mean": mean, f"{name}_std": std}


def _speed_columns(metrics: list[dict]) -> dict:
    """Per path, images/s at the evaluation batch and latency at batch 1, mean over seeds (None where a path
    did not run: the fused kernels need CUDA)."""
    out = {}
    rows = [r for m in metrics for r in m["speed"]]
    batch = max(r["batch"] for r in rows)
    out["speed_batch"] = batch
    for path in ("fused", "loop"):
        per_s = [r["images_per_s"] for r in rows if r["path"] == path and r["batch"] == batch and r["available"]]
        latency = [r["latency_ms"] for r in rows if r["path"] == path and r["batch"] == 1 and r["available"]]
        out[f"{path}_images_per_s"] = statistics.fmean(per_s) if per_s else None
        out[f"{path}_latency_ms_batch1"] = statistics.fmean(latency) if latency else None
    out["speed_device"] = rows[0]["device"]
    return out


def _comparison_columns(comparison) -> dict:
    """The comparison with the baseline as flat columns; ``comparison``: a ``Comparison``, "baseline", or None
    (the baseline is not in the study)."""
    if not isinstance(comparison, Comparison):
        verdict = "baseline" if comparison == "baseline" else "no baseline in the study"
        return {"vs_baseline": None, "vs_baseline_low": None, "vs_baseline_high": None, "p_value": None,
                "test": None, "verdict": verdict}
    return {"vs_baseline": comparison.difference, "vs_baseline_low": comparison.low,
            "vs_baseline_high": comparison.high, "p_value": comparison.p_value, "test": comparison.test,
            "verdict": comparison.verdict}


def _threshold(value: Optional[float]) -> str:
    return "-" if value is None else format(value, "g")


def _best_column(rows: list[dict]) -> str:
    return ("best-epoch top-1 (picked on test set)" if rows[0]["best_picked_on"] == "test"
            else "test top-1 of the epoch best on the held-out split")


def format_markdown(rows: list[dict], cfg: Config, baseline: Baseline = DEFAULT_BASELINE,
                    conventions: Optional[dict] = None, other_runs: Sequence[RunCurve] = (),
                    sizes: Sequence[str] = (), varied: Sequence[str] = ()) -> str:
    conventions = conventions or {}
    models = list(conventions) or ["sdt"]
    last_n = min(r["last10_epochs"] for r in rows)
    eval_set = "test set" if rows[0]["best_picked_on"] == "test" else "held-out split"
    lines = [
        f"# Neuron-model study on {cfg.dataset} (T = {cfg.time_steps}, {cfg.total_epochs} epochs): "
        f"{'; '.join(sizes) or size_text(cfg)}",
        "",
        recipe_text(cfg, varied),
        "",
        "## Accuracy",
        "",
        f"Top-1 in %, mean ± sample std over seeds; per seed: each seed's final top-1, its seed in brackets. "
        f"Final = last epoch; {last_text(last_n)} = the mean of the {last_text(last_n)}' evaluations on the "
        f"{eval_set}, per seed, then over seeds{_warmup_note(rows, cfg)}. Δ final: the difference of mean final "
        f"top-1 to the baseline, {baseline.text}, with its 95 % confidence interval and p-value (a paired "
        "t-test on per-seed differences when both ran the same seeds, else Welch's t-test); \"within noise\" when "
        "the interval contains 0.",
        "",
        f"| model | neuron | u_th | seeds | final top-1 | final top-1 per seed | {_best_column(rows)} "
        f"| mean of {last_text(last_n)} | Δ final [95 % CI] | p | test | verdict | publication, best epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = f"{r['published_best_top1']:.2f}" if r["published_best_top1"] is not None else "-"
        lines.append(
            f"| {r['size']} | {neuron_title(r['mode'])} | {_threshold(r['v_threshold'])} | {r['seeds']} "
            f"| {pm_text(r['final_top1_mean'], r['final_top1_std'])} | {r['final_top1_per_seed']} "
            f"| {pm_text(r['best_top1_mean'], r['best_top1_std'])} "
            f"| {pm_text(r['last10_top1_mean'], r['last10_top1_std'])}{' ‡' if r['last10_warmup_epochs'] else ''} "
            f"| {interval_text(r)} | {p_text(r)} | {r['test'] or '-'} | {r['verdict']} | {pub} |"
        )
    given = given_run_rows(other_runs, baseline)
    for r in given:
        threshold = _threshold(r["v_threshold"]) + (" (label)" if r["threshold_from_label"] else "")
        lines.append(
            f"| {r['model'] or 'model not recorded'}, given runs | {neuron_title(r['mode'])} | {threshold} "
            f"| {r['seeds']} run{'s' if r['seeds'] > 1 else ''} | {pm_text(r['final_top1_mean'], r['final_top1_std'])} | - "
            f"| {pm_text(r['best_top1_mean'], r['best_top1_std'])} | {pm_text(r['last10_top1_mean'], r['last10_top1_std'])} "
            f"| {interval_text(r)} | {p_text(r)} | {r['test'] or '-'} | {r['verdict']} | {r['as_published_top1']:.2f}* |"
        )
    if given:
        lines += ["", "Rows of given runs (--with-runs) are grouped by their recorded or labelled neuron and compared "
                  "with the baseline among them; * their figure as the publication computed it: the best epoch of "
                  "the best run per setting, from their own summary files."]
    speed = "fused_images_per_s" in rows[0]
    header = ["model", "neuron", "u_th", "mean firing rate", "SOPs / image (M)", *(f"energy {m} (uJ)" for m in models)]
    if speed:
        header += [f"fused images/s (batch {rows[0]['speed_batch']})", f"loop images/s (batch {rows[0]['speed_batch']})",
                   "fused latency, batch 1 (ms)", "loop latency, batch 1 (ms)"]
    lines += ["", "## Cost per image", "",
              "Energy per image from the final model on the test set, mean ± std over seeds, by each energy model "
              "(conventions below)." + (f" Inference speed on {rows[0]['speed_device']}: median of timed forwards, "
                                        "mean over seeds; '-' where a path did not run." if speed else ""),
              "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["size"], neuron_title(r["mode"]), _threshold(r["v_threshold"]), f"{r['mean_firing_rate']:.4f}",
                 f"{r['sops_per_image'] / 1e6:.2f}",
                 *(pm_text(r[f"energy_{m}_uj_mean"], r[f"energy_{m}_uj_std"], 3) for m in models)]
        if speed:
            cells += ["-" if r[k] is None else f"{r[k]:.1f}" if "per_s" in k else f"{r[k]:.2f}"
                      for k in ("fused_images_per_s", "loop_images_per_s", "fused_latency_ms_batch1",
                                "loop_latency_ms_batch1")]
        lines.append("| " + " | ".join(cells) + " |")
    if conventions:
        lines += ["", "Energy conventions:", ""] + [f"- `{m}`: {text}" for m, text in conventions.items()]
    if other_runs:
        lines += ["", "## Runs of the original code and others", "",
                  f"Read from their summary.csv: best and final epoch, mean of the {last_text(LAST_EPOCHS)}, computed as "
                  "for the runs above.", "", runs_markdown(other_runs).rstrip()]
    lines += ["", "The publication column holds the paper's best-epoch figures (best of 310 test-set evaluations, "
              "one run each); it is for reference, not computed here. Firing rates count spike events per neuron and "
              "step (a multi-level spike k / D is k events)."]
    return "\n".join(lines) + "\n"


def recipe_text(cfg: Config, varied: Sequence[str] = ()) -> str:
    """The training recipe in one line, what a reader checks before the figures."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        until = f"off from epoch {cfg.mixup_off_epoch}" if cfg.mixup_off_epoch else "on throughout"
        mixup = f"mixup {cfg.mixup:g} / cutmix {cfg.cutmix:g}, {until}"
    else:
        mixup = "no mixup"
    warmup = (f"{cfg.warmup_epochs} warm-up epoch{'s' if cfg.warmup_epochs > 1 else ''} from lr {cfg.warmup_lr:g}"
              if cfg.warmup_epochs else "no warm-up")
    cooldown = f" + {cfg.cooldown_epochs} cooldown at {cfg.min_lr:g}" if cfg.cooldown_epochs else ""
    text = (f"Recipe: {cfg.opt}, lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, batch size {cfg.batch_size}, "
            f"{cfg.sched} schedule over {cfg.epochs} epochs{cooldown}, {warmup}, T = {cfg.time_steps}, {mixup}, "
            f"label smoothing {cfg.smoothing:g}.")
    return text + (f" Varied: {', '.join(varied)} (the values above are the first run's)." if varied else "")


def _warmup_note(rows: list[dict], cfg: Config) -> str:
    """How the mean of the last epochs treats the warm-up."""
    note = ""
    if cfg.warmup_epochs:
        note = (f", leaving out the warm-up (the first {cfg.warmup_epochs} epoch{'s' if cfg.warmup_epochs > 1 else ''}"
                f"; a run with fewer than {LAST_EPOCHS} epochs after it averages those it has)")
    if any(r["last10_warmup_epochs"] for r in rows):
        note += ("; ‡: these runs end inside their warm-up, so their mean is of warm-up epochs, trained at the "
                 "warm-up's learning rate")
    return note


def format_latex(rows: list[dict], cfg: Config, baseline: Baseline = DEFAULT_BASELINE,
                 sizes: Sequence[str] = ()) -> str:
    """The accuracy table for a paper: mean ± std over seeds, the best of each accuracy column in bold."""
    last_n = min(r["last10_epochs"] for r in rows)
    headers = ["Model", "Neuron", "u_th", "Seeds", "Final top-1", "Best top-1", f"Mean of {last_text(last_n)}",
               "Diff. final [95% CI]", "p"]
    body = [[r["size"], neuron_title(r["mode"]), r["v_threshold"], r["seeds"],
             (r["final_top1_mean"], r["final_top1_std"]), (r["best_top1_mean"], r["best_top1_std"]),
             (r["last10_top1_mean"], r["last10_top1_std"]),
             None if r["vs_baseline"] is None else interval_text(r), None if r["p_value"] is None else p_text(r)] for r in rows]
    caption = (f"{cfg.dataset}, {'; '.join(sizes) or size_text(cfg)}, T = {cfg.time_steps}: top-1 (%), mean and std "
               f"over seeds; difference of mean final top-1 against {baseline.text}")
    return latex_table(headers, body, bold_best=(4, 5, 6), caption=caption, groups=[r["model"] for r in rows])
