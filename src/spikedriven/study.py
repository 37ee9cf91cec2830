"""The neuron-model study as one command: plan, train, evaluate, tabulate, plot.

A study is a grid of (spike mode, threshold, seed) runs sharing one config.
Each run lives in ``<study>/runs/<mode>-uth<v>-seed<s>/`` and is trained with
``--resume auto``, so rerunning the same command skips finished runs and
resumes interrupted ones. ``study.yaml`` records the plan and every override.

A run made with other settings than the study now asks for (its config file
was edited, a flag changed) is "stale": the study refuses to mix it into its
tables, and ``--rerun-stale`` trains it again after moving the old folder aside.
Settings that change how a run is carried out, not what it computes
(``resume.RUNTIME_SETTINGS``), never make a run stale.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .analysis.runs import RunCurve, read_run, runs_markdown
from .analysis.statistics import Comparison, compare_to_baseline, last_mean, latex_table, mean_std
from .atomic import atomic_write, write_text_atomic
from .config import Config, coerce, load_config, parse_key_values, recorded_config, requested_values
from .data import cpu_ids
from .errors import ConfigError, SpikedrivenError
from .neurons import neuron_class
from .resume import RUNTIME_SETTINGS, setting_changes, show
from .run_folder import ConsoleHandler, move_aside

if TYPE_CHECKING:
    from .slurm import SlurmOptions

log = logging.getLogger("spikedriven.study")  # its own handler: run loggers write to each run's log.txt
log.propagate = False
if not log.handlers:
    _handler = ConsoleHandler()
    _handler.setFormatter(logging.Formatter("study: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

# Best-epoch test top-1 of the publication (SPEC section 1), for comparison only.
PUBLISHED_BEST_TOP1 = {
    "torch/cifar10": {("lif", 1.0): 94.34, ("if", 0.8): 94.13, ("if", 1.0): 94.44, ("if", 1.2): 94.32,
                      ("if_soft", 0.8): 93.88, ("if_soft", 1.0): 94.53, ("if_soft", 1.2): 94.40},
    "torch/cifar100": {("lif", 1.0): 76.00, ("if", 0.8): 76.11, ("if", 1.0): 76.07, ("if", 1.2): 76.15,
                       ("if_soft", 0.8): 76.00, ("if_soft", 1.0): 76.36, ("if_soft", 1.2): 76.56},
}
DEFAULT_THRESHOLDS, DEFAULT_LIF_THRESHOLDS = "0.8,1.0,1.2", "1.0"


def neuron_title(mode: str) -> str:
    return neuron_class(mode).title or mode


def _takes_threshold(mode: str) -> bool:
    return "v_threshold" in neuron_class(mode).settings()


def setting_label(mode: str, v_threshold: Optional[float]) -> str:
    return neuron_title(mode) + ("" if v_threshold is None else f" u_th={v_threshold:g}")


@dataclass(frozen=True)
class PlannedRun:
    mode: str
    v_threshold: Optional[float]  # None: the neuron has no threshold
    seed: int

    @property
    def name(self) -> str:
        threshold = "" if self.v_threshold is None else f"-uth{self.v_threshold:g}"
        return f"{self.mode}{threshold}-seed{self.seed}"

    @property
    def setting(self) -> tuple[str, float]:
        return self.mode, self.v_threshold


@dataclass(frozen=True)
class EvalPlan:
    """What each run's evaluation measures beyond accuracy: the energy models (with their constants,
    in pJ) and whether inference is timed."""

    energy: tuple[str, ...] = ("sdt",)
    energy_constants: tuple[tuple[str, float], ...] = ()
    speed: bool = False

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(["sdt", *self.energy]))

    def eval_flags(self) -> list[str]:
        flags = ["--energy", ",".join(self.models)]
        if self.energy_constants:
            flags += ["--energy-constants", *(f"{k}={v!r}" for k, v in self.energy_constants)]
        return flags + (["--speed"] if self.speed else [])

    def kwargs(self) -> dict:
        return dict(energy=self.models, energy_constants=dict(self.energy_constants), speed=self.speed)

    def satisfied_by(self, metrics: dict) -> bool:
        """Whether an evaluation already measured everything this plan asks for, with these constants."""
        from .analysis import resolve_energy_models

        energy = metrics.get("energy") or {}
        for model, constants in resolve_energy_models(self.models, dict(self.energy_constants)):
            if model.name not in energy or energy[model.name].get("constants_pj") != constants:
                return False
        return not self.speed or bool(metrics.get("speed"))


def parse_baseline(text: Optional[str]) -> tuple[str, Optional[float], bool]:
    """``--baseline MODE[:U_TH]`` as (mode, threshold, given); default LIF at u_th 1."""
    if text is None:
        return "lif", 1.0, False
    mode, _, threshold = text.partition(":")
    neuron_class(mode.strip())  # an unknown name fails here, with the list of neurons
    if not threshold:
        return mode.strip(), (1.0 if _takes_threshold(mode.strip()) else None), True
    try:
        return mode.strip(), float(threshold), True
    except ValueError:
        raise ConfigError(f"--baseline takes MODE or MODE:U_TH such as if_soft:1.0, got {text!r}") from None


def parse_list(text: str, kind, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} is empty")
    return values


def parse_sets(items: Sequence[str]) -> dict:
    """``--set key=value`` pairs; values are read as YAML scalars (``0.5``, ``true``, ``[1, 1]``)."""
    return parse_key_values(items, "--set")


def split_thresholds(modes: list[str], thresholds: Optional[str], lif_thresholds: Optional[str]) -> tuple[list, list]:
    """The thresholds of the non-leaky modes and of the leaky ones (lif, lif_soft, plif); a list given for modes
    the study does not run is refused (it would be dropped without a word)."""
    leaky = [m for m in modes if _takes_threshold(m) and neuron_class(m).leaky]
    others = [m for m in modes if _takes_threshold(m) and not neuron_class(m).leaky]
    if thresholds is not None and not others:
        raise ConfigError(f"--thresholds {thresholds} set the thresholds of the non-leaky modes (if, if_soft, ...), and "
                          f"--modes {','.join(modes)} holds none; the leaky modes' thresholds are --lif-thresholds "
                          f"(default {DEFAULT_LIF_THRESHOLDS})")
    if lif_thresholds is not None and not leaky:
        raise ConfigError(f"--lif-thresholds {lif_thresholds} set the thresholds of the leaky modes (lif, lif_soft, "
                          f"plif), and --modes {','.join(modes)} holds none; the other modes' thresholds are "
                          f"--thresholds (default {DEFAULT_THRESHOLDS})")
    return (parse_list(thresholds or DEFAULT_THRESHOLDS, float, "--thresholds"),
            parse_list(lif_thresholds or DEFAULT_LIF_THRESHOLDS, float, "--lif-thresholds"))


def check_devices(devices: list[str]) -> list[str]:
    """``--devices``: CUDA GPU ids that exist here, or ``cpu`` entries (one CPU run each)."""
    import torch

    gpus = [d for d in devices if d != "cpu"]
    if any(not d.isdigit() for d in gpus):
        raise ConfigError(f"--devices takes GPU ids (0,1,...) or cpu entries, got {','.join(devices)}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and not count:
        raise ConfigError(f"--devices {','.join(devices)} names CUDA GPUs, and this machine has no CUDA GPU; give cpu "
                          "entries (--devices cpu,cpu trains two runs at once on the CPUs) or leave --devices out")
    missing = [d for d in gpus if int(d) >= count]
    if missing:
        raise ConfigError(f"--devices names GPU {', '.join(missing)}, and this machine has {count} (ids 0-{count - 1})")
    return devices


def plan_runs(modes: list[str], thresholds: list[float], lif_thresholds: list[float], seeds: list[int]) -> list[PlannedRun]:
    runs = []
    for mode in modes:
        if not _takes_threshold(mode):
            mode_thresholds = [None]
        else:
            mode_thresholds = lif_thresholds if neuron_class(mode).leaky else thresholds
        for thr in mode_thresholds:
            runs.extend(PlannedRun(mode, None if thr is None else float(thr), seed) for seed in seeds)
    return runs


def split_cpus(cpus: list[int], parts: int) -> list[list[int]]:
    """``parts`` contiguous shares of ``cpus``, as equal as they come; with fewer CPUs than parts, every part gets all."""
    if len(cpus) < parts:
        return [list(cpus)] * parts
    size, extra = divmod(len(cpus), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [list(cpus[bounds[i]:bounds[i + 1]]) for i in range(parts)]


class Study:
    def __init__(self, config_path: Optional[str], overrides: dict, runs: list[PlannedRun], folder: Path,
                 command_line: Optional[str] = None, evaluation: EvalPlan = EvalPlan(),
                 baseline: tuple[str, Optional[float]] = ("lif", 1.0), other_runs: Sequence[RunCurve] = ()):
        self.config_path, self.overrides, self.runs, self.folder = config_path, overrides, runs, folder
        self.command_line = command_line  # the study's own command: what resumes it
        self.evaluation, self.baseline, self.other_runs = evaluation, baseline, list(other_runs)
        self.configs = {run: self.run_config(run) for run in runs}  # validates every run before any starts

    def run_values(self, run: PlannedRun) -> dict:
        threshold = {} if run.v_threshold is None else {"v_threshold": run.v_threshold}
        return {**self.overrides, "spike_mode": run.mode, **threshold, "seed": run.seed, "output": str(self.run_dir(run))}

    def run_config(self, run: PlannedRun) -> Config:
        return load_config(self.config_path, self.run_values(run))

    def run_dir(self, run: PlannedRun) -> Path:
        return self.folder / "runs" / run.name

    def eval_dir(self, run: PlannedRun) -> Path:
        return self.run_dir(run) / "eval_last"

    def recorded_config(self, run: PlannedRun) -> Optional[Config]:
        """The settings the run in its folder was (or is being) trained with; None if it never started."""
        path = self.run_dir(run) / "config.yaml"  # rewritten at every start, so it is the checkpoint's config too
        if not path.is_file():
            return None
        try:
            return recorded_config(yaml.safe_load(path.read_text()) or {}, str(path), self.overrides)
        except (ConfigError, yaml.YAMLError, OSError) as e:
            raise ConfigError(f"cannot read the settings of the run in {self.run_dir(run)} ({e}); move that folder "
                              "aside to train the run again") from None

    def stale_reasons(self, run: PlannedRun) -> str:
        """What differs between the run in its folder and what the study asks for ('' when nothing does)."""
        recorded = self.recorded_config(run)
        if recorded is None:
            return ""
        changes = setting_changes(recorded, self.configs[run], ignore=RUNTIME_SETTINGS)
        return ", ".join(f"{k} {show(old)} -> {show(new)}" for k, (old, new) in changes.items())

    def is_trained(self, run: PlannedRun) -> bool:
        return (self.run_dir(run) / "results.json").is_file()

    def is_done(self, run: PlannedRun) -> bool:
        """Trained to the end and evaluated with the run's own settings, measuring all the study asks for."""
        metrics = self.eval_dir(run) / "metrics.json"
        if not (self.is_trained(run) and metrics.is_file()):
            return False
        try:
            data = json.loads(metrics.read_text())
        except (OSError, ValueError):
            return False
        return not data.get("overridden_settings") and self.evaluation.satisfied_by(data)

    # ---------------------------------------------------------------- record
    def record(self) -> None:
        """Write ``study.yaml``: the config file, the overrides and every run this folder has planned."""
        doc = {"config": self.config_path, "overrides": self.overrides, "runs": [r.name for r in self.runs]}
        path = self.folder / "study.yaml"
        if path.exists():
            old = yaml.safe_load(path.read_text()) or {}
            doc["runs"] = sorted(set(old.get("runs", [])) | set(doc["runs"]))
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))

    # --------------------------------------------------------------- commands
    def train_args(self, run: PlannedRun) -> list[str]:
        args = ["train"] + (["-c", self.config_path] if self.config_path else [])
        cfg = self.configs[run]
        for key in sorted({*self.overrides, *self.run_values(run)}):
            value = getattr(cfg, key)
            args += ["--" + key.replace("_", "-"), *(map(str, value) if isinstance(value, list) else [str(value)])]
        return args + ["--resume", "auto"]

    def eval_args(self, run: PlannedRun) -> list[str]:
        return ["eval", "--checkpoint", str(self.run_dir(run) / "last.pth.tar"), "--eval-output", str(self.eval_dir(run)),
                *self.evaluation.eval_flags()]

    def steps(self, run: PlannedRun, nproc: int = 1) -> list[list[str]]:
        """The commands that train ``run`` (unless it is trained already: then only its evaluation is missing
        or measured less than asked) and evaluate it, as a shell would read them."""
        evaluate = ["spikedriven", *self.eval_args(run)]
        if self.is_trained(run):
            return [evaluate]
        launcher = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "spikedriven"] if nproc > 1 else ["spikedriven"]
        return [launcher + self.train_args(run), evaluate]

    def shell_command(self, run: PlannedRun, nproc: int = 1) -> str:
        return " && ".join(shlex.join(step) for step in self.steps(run, nproc))

    # -------------------------------------------------------------- execution
    def run_inline(self, run: PlannedRun) -> None:
        from .evaluation import evaluate_checkpoint
        from .resume import plan_resume, resolve_config
        from .training import train

        if not self.is_trained(run):
            cfg = self.configs[run]
            plan = plan_resume("auto", False, cfg.output)
            requested, sources = requested_values(self.config_path, self.run_values(run))
            cfg = resolve_config(cfg, requested, plan, sources)
            train(cfg, plan, resume_command=self.command_line)
        evaluate_checkpoint(self.run_dir(run) / "last.pth.tar", output=self.eval_dir(run), **self.evaluation.kwargs())

    def run_parallel(self, pending: list[PlannedRun], devices: list[str], nproc: int) -> None:
        """One run per group of ``nproc`` devices at a time, each a subprocess."""
        if len(devices) < nproc:
            raise ConfigError(f"--nproc-per-run {nproc} needs at least that many --devices, got {len(devices)}")
        slots = [devices[i:i + nproc] for i in range(0, len(devices) - nproc + 1, nproc)]
        # Each slot gets its own share of the CPUs, so that each run's auto loader workers fill that share
        # and parallel runs do not crowd each other's.
        cpu_shares = split_cpus(cpu_ids(), len(slots)) if hasattr(os, "sched_setaffinity") else None
        queue, active, failed = list(pending), {}, []
        try:
            while queue or active:
                while queue and len(active) < len(slots):
                    slot = next(s for s in range(len(slots)) if s not in active)
                    run = queue.pop(0)
                    gpus = [d for d in slots[slot] if d != "cpu"]
                    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}  # none listed: the run sees no GPU
                    log_path = self.run_dir(run).parent / f"{run.name}.log"
                    log_path.parent.mkdir(parents=True, exist_ok=True)
                    handle = open(log_path, "a")
                    set_cpus = None if cpu_shares is None else functools.partial(os.sched_setaffinity, 0, cpu_shares[slot])
                    command = self.shell_command(run, nproc)
                    proc = subprocess.Popen(["bash", "-c", command], env=env, stdout=handle,
                                            stderr=subprocess.STDOUT, preexec_fn=set_cpus)
                    active[slot] = (run, proc, handle)
                    cpus = f", {len(cpu_shares[slot])} CPUs" if cpu_shares else ""
                    where = f"GPU {','.join(gpus)}" if gpus else "the CPU"
                    log.info("started %s on %s%s (log %s)", run.name, where, cpus, log_path)
                time.sleep(1.0)
                for slot, (run, proc, handle) in list(active.items()):
                    if proc.poll() is not None:
                        handle.close()
                        del active[slot]
                        if proc.returncode:
                            failed.append(run.name)
                        log.info("%s %s", run.name, "failed" if proc.returncode else "finished")
        except KeyboardInterrupt:
            # Ctrl-C reached the runs too (one process group): each saves a checkpoint and exits
            from .training import RunStopped

            for run, proc, handle in active.values():
                proc.wait()
                handle.close()
            again = f"resume with: {self.command_line}" if self.command_line else "rerun the same study command to resume it"
            raise RunStopped(130, f"study interrupted; every run saved where it stopped; {again}") from None
        if failed:
            raise SpikedrivenError(f"{len(failed)} run(s) failed: {', '.join(failed)}; see their .log files in {self.folder / 'runs'}")

    # ---------------------------------------------------------------- results
    def collect(self) -> list[dict]:
        """One row per (mode, threshold) over the seeds that finished, with the comparison to the baseline."""
        rows, finals = [], {}
        dataset = next(iter(self.configs.values())).dataset
        for (mode, thr), done in self._done_by_setting().items():
            res = [json.loads((self.run_dir(r) / "results.json").read_text()) for r in done]
            met = [json.loads((self.eval_dir(r) / "metrics.json").read_text()) for r in done]
            final = [x.get("final_test_top1", x["final_top1"]) for x in res]
            best = [x.get("best_test_top1", x["best_top1"]) for x in res]
            last = [last_mean(_summary_top1(self.run_dir(r)), LAST_EPOCHS) for r in done]
            finals[(mode, thr)] = (final, [r.seed for r in done])
            row = {
                "mode": mode, "v_threshold": thr, "seeds": len(done), "seed_list": " ".join(str(r.seed) for r in done),
                **_mean_std_columns("final_top1", final), **_mean_std_columns("best_top1", best),
                **_mean_std_columns("last10_top1", [value for value, _ in last]),
                "last10_epochs": min(n for _, n in last),
                "best_picked_on": res[0]["eval_set"],
                "mean_firing_rate": statistics.fmean(m["mean_firing_rate"] for m in met),
                "sops_per_image": statistics.fmean(m["totals"]["sops"] for m in met),
                "energy_uj_per_image": statistics.fmean(m["totals"]["energy_snn_j"] * 1e6 for m in met),
            }
            for model in self.evaluation.models:
                row.update(_mean_std_columns(f"energy_{model}_uj", [m["energy"][model]["total_j"] * 1e6 for m in met]))
            if self.evaluation.speed:
                row.update(_speed_columns(met))
            row["published_best_top1"] = PUBLISHED_BEST_TOP1.get(dataset, {}).get((mode, thr))
            rows.append(row)
        baseline = finals.get(self.baseline)
        for row in rows:
            if baseline is None:
                comparison = None
            elif (row["mode"], row["v_threshold"]) == self.baseline:
                comparison = "baseline"
            else:
                values, seeds = finals[(row["mode"], row["v_threshold"])]
                comparison = compare_to_baseline(values, baseline[0], seeds, baseline[1])
            row.update(_comparison_columns(comparison))
        return rows

    def write_results(self) -> list[dict]:
        rows = self.collect()
        if not rows:
            raise SpikedrivenError(f"no finished runs in {self.folder} to tabulate")
        with atomic_write(self.folder / "results.csv", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        # the header describes the runs as they were trained (the stale check made them agree with the plan)
        described = self.recorded_config(next(r for r in self.runs if self.is_done(r)))
        first = next(iter(self._done_by_setting().values()))[0]
        conventions = json.loads((self.eval_dir(first) / "metrics.json").read_text())["energy"]
        conventions = {m: conventions[m]["convention"] for m in self.evaluation.models}
        write_text_atomic(self.folder / "results.md", format_markdown(rows, described, self.baseline, conventions,
                                                                      self.other_runs))
        write_text_atomic(self.folder / "results.tex", format_latex(rows, described, self.baseline))
        self.curves_figure().savefig(self.folder / "curves.png", dpi=120)
        self.firing_figure().savefig(self.folder / "firing.png", dpi=120)
        tradeoff_figure(rows, self.evaluation.models).savefig(self.folder / "tradeoff.png", dpi=120)
        names = ("results.md", "results.tex", "results.csv", "curves.png", "firing.png", "tradeoff.png")
        log.info("results: %s", ", ".join(str(self.folder / n) for n in names))
        return rows

    def _done_by_setting(self) -> dict:
        groups = {}
        for setting in dict.fromkeys(r.setting for r in self.runs):
            done = [r for r in self.runs if r.setting == setting and self.is_done(r)]
            if done:
                groups[setting] = done
        return groups

    def curves_figure(self) -> Figure:
        fig = Figure(figsize=(8, 5), layout="constrained")
        ax = fig.subplots()
        for (mode, thr), runs in self._done_by_setting().items():
            curves = [_summary_top1(self.run_dir(r)) for r in runs]
            n = min(len(c) for c in curves)
            epochs = range(n)
            mean = [statistics.fmean(c[e] for c in curves) for e in epochs]
            line, = ax.plot(epochs, mean, label=f"{setting_label(mode, thr)} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
            if len(curves) > 1:
                lo = [min(c[e] for c in curves) for e in epochs]
                hi = [max(c[e] for c in curves) for e in epochs]
                ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_ylabel("evaluation top-1 (%)")
        ax.set_title("Evaluation top-1 per epoch (line: mean over seeds, band: min to max)")
        ax.legend(fontsize=8)
        return fig

    def firing_figure(self) -> Figure:
        """Grouped bars: one group per neuron layer (categories, so no line joins them), one bar per setting."""
        series = {}
        for setting, runs in self._done_by_setting().items():
            mets = [json.loads((self.eval_dir(r) / "metrics.json").read_text()) for r in runs]
            layers = list(mets[0]["firing_rates"])
            series[setting] = (layers, [statistics.fmean(m["firing_rates"][l]["mean"] for m in mets) for l in layers])
        layers = next(iter(series.values()))[0]
        fig = Figure(figsize=(max(8.0, 0.25 * len(layers) * len(series) + 3), 5), layout="constrained")
        ax = fig.subplots()
        width = 0.8 / len(series)
        for i, ((mode, thr), (_, rates)) in enumerate(series.items()):
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar([x + offset for x in range(len(layers))], rates, width, label=setting_label(mode, thr))
        ax.set_xticks(range(len(layers)), layers, rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("firing rate (mean over T and seeds)")
        ax.set_title("Firing rate per neuron layer")
        ax.legend(fontsize=8)
        return fig


LAST_EPOCHS = 10  # the mean of the last epochs' top-1, a steadier figure than the final epoch alone


def _last(n: int) -> str:
    return "last epoch" if n == 1 else f"last {n} epochs"


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


def _summary_top1(run_dir: Path) -> list[float]:
    with open(run_dir / "summary.csv", newline="") as f:
        return [float(r["eval_top1"]) for r in csv.DictReader(f)]


def _pm(mean: float, std: Optional[float], digits: int = 2) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _threshold(value: Optional[float]) -> str:
    return "-" if value is None else format(value, "g")


def _interval(row: dict) -> str:
    if row["vs_baseline"] is None:
        return "-"
    if row["vs_baseline_low"] is None or row["vs_baseline_low"] == row["vs_baseline_high"]:
        return f"{row['vs_baseline']:+.2f}"
    return f"{row['vs_baseline']:+.2f} [{row['vs_baseline_low']:+.2f}, {row['vs_baseline_high']:+.2f}]"


def _p(row: dict) -> str:
    p = row["p_value"]
    return "-" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _best_column(rows: list[dict]) -> str:
    return ("best-epoch top-1 (picked on test set)" if rows[0]["best_picked_on"] == "test"
            else "test top-1 of the epoch best on the held-out split")


def _baseline_text(baseline: tuple[str, Optional[float]]) -> str:
    return setting_label(*baseline)


def format_markdown(rows: list[dict], cfg: Config, baseline: tuple[str, Optional[float]] = ("lif", 1.0),
                    conventions: Optional[dict] = None, other_runs: Sequence[RunCurve] = ()) -> str:
    conventions = conventions or {}
    models = list(conventions) or ["sdt"]
    last_n = min(r["last10_epochs"] for r in rows)
    eval_set = "test set" if rows[0]["best_picked_on"] == "test" else "held-out split"
    lines = [
        f"# Neuron-model study: {cfg.dataset}, {cfg.layer}-{cfg.dim}, T = {cfg.time_steps}, {cfg.total_epochs} epochs",
        "",
        "## Accuracy",
        "",
        f"Top-1 in %, mean ± sample std over seeds. Final = last epoch; {_last(last_n)} = the mean of the "
        f"{_last(last_n)}' evaluations on the {eval_set}, per seed, then over seeds. Δ final: the difference of mean final "
        f"top-1 to the baseline, {_baseline_text(baseline)}, with its 95 % confidence interval and p-value (a paired "
        "t-test on per-seed differences when both ran the same seeds, else Welch's t-test); \"within noise\" when "
        "the interval contains 0.",
        "",
        f"| neuron | u_th | seeds | final top-1 | {_best_column(rows)} | mean of {_last(last_n)} | Δ final [95 % CI] "
        "| p | test | verdict | publication, best epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = f"{r['published_best_top1']:.2f}" if r["published_best_top1"] is not None else "-"
        lines.append(
            f"| {neuron_title(r['mode'])} | {_threshold(r['v_threshold'])} | {r['seeds']} "
            f"| {_pm(r['final_top1_mean'], r['final_top1_std'])} | {_pm(r['best_top1_mean'], r['best_top1_std'])} "
            f"| {_pm(r['last10_top1_mean'], r['last10_top1_std'])} | {_interval(r)} | {_p(r)} | {r['test'] or '-'} "
            f"| {r['verdict']} | {pub} |"
        )
    speed = "fused_images_per_s" in rows[0]
    header = ["neuron", "u_th", "mean firing rate", "SOPs / image (M)", *(f"energy {m} (uJ)" for m in models)]
    if speed:
        header += [f"fused images/s (batch {rows[0]['speed_batch']})", f"loop images/s (batch {rows[0]['speed_batch']})",
                   "fused latency, batch 1 (ms)", "loop latency, batch 1 (ms)"]
    lines += ["", "## Cost per image", "",
              "Energy per image from the final model on the test set, mean ± std over seeds, by each energy model "
              "(conventions below)." + (f" Inference speed on {rows[0]['speed_device']}: median of timed forwards, "
                                        "mean over seeds; '-' where a path did not run." if speed else ""),
              "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [neuron_title(r["mode"]), _threshold(r["v_threshold"]), f"{r['mean_firing_rate']:.4f}",
                 f"{r['sops_per_image'] / 1e6:.2f}",
                 *(_pm(r[f"energy_{m}_uj_mean"], r[f"energy_{m}_uj_std"], 3) for m in models)]
        if speed:
            cells += ["-" if r[k] is None else f"{r[k]:.1f}" if "per_s" in k else f"{r[k]:.2f}"
                      for k in ("fused_images_per_s", "loop_images_per_s", "fused_latency_ms_batch1",
                                "loop_latency_ms_batch1")]
        lines.append("| " + " | ".join(cells) + " |")
    if conventions:
        lines += ["", "Energy conventions:", ""] + [f"- `{m}`: {text}" for m, text in conventions.items()]
    if other_runs:
        lines += ["", "## Runs of the original code and others", "",
                  f"Read from their summary.csv: best and final epoch, mean of the {_last(LAST_EPOCHS)}, computed as "
                  "for the runs above.", "", runs_markdown(other_runs).rstrip()]
    lines += ["", "The publication column holds the paper's best-epoch figures (best of 310 test-set evaluations, "
              "one run each); it is for reference, not computed here. Firing rates count spike events per neuron and "
              "step (a multi-level spike k / D is k events)."]
    return "\n".join(lines) + "\n"


def format_latex(rows: list[dict], cfg: Config, baseline: tuple[str, Optional[float]] = ("lif", 1.0)) -> str:
    """The accuracy table for a paper: mean ± std over seeds, the best of each accuracy column in bold."""
    last_n = min(r["last10_epochs"] for r in rows)
    headers = ["Neuron", "u_th", "Seeds", "Final top-1", "Best top-1", f"Mean of {_last(last_n)}",
               "Diff. final [95% CI]", "p"]
    body = [[neuron_title(r["mode"]), r["v_threshold"], r["seeds"],
             (r["final_top1_mean"], r["final_top1_std"]), (r["best_top1_mean"], r["best_top1_std"]),
             (r["last10_top1_mean"], r["last10_top1_std"]),
             None if r["vs_baseline"] is None else _interval(r), None if r["p_value"] is None else _p(r)] for r in rows]
    caption = (f"{cfg.dataset}, {cfg.layer}-{cfg.dim}, T = {cfg.time_steps}: top-1 (%), mean and std over seeds; "
               f"difference of mean final top-1 against {_baseline_text(baseline)}")
    return latex_table(headers, body, bold_best=(3, 4, 5), caption=caption)


def tradeoff_figure(rows: list[dict], models: Sequence[str]) -> Figure:
    """Final top-1 against energy per image, one panel per energy model; bars: std over seeds."""
    fig = Figure(figsize=(4.5 * len(models) + 1.0, 4.5), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        for r in rows:
            ax.errorbar(r[f"energy_{model}_uj_mean"], r["final_top1_mean"], xerr=r[f"energy_{model}_uj_std"],
                        yerr=r["final_top1_std"], fmt="o", capsize=3, label=setting_label(r["mode"], r["v_threshold"]))
        ax.set_xlabel(f"energy per image, {model} (uJ)")
        ax.set_ylabel("final top-1 (%)")
        ax.set_title(f"energy model: {model}", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("Accuracy against energy (points: mean over seeds; bars: std over seeds)")
    return fig


def default_study_dir(config_path: Optional[str], cfg: Config) -> Path:
    stem = Path(config_path).stem if config_path else "defaults"
    return Path("output/study") / f"{cfg.dataset.split('/')[-1]}-{stem}"


def run_study(
    config_path: Optional[str], overrides: dict, modes: list[str], thresholds: Optional[str] = None,
    lif_thresholds: Optional[str] = None, n_seeds: int = 1, *, study_dir: Optional[str] = None, dry_run: bool = False,
    devices: Optional[list[str]] = None, nproc_per_run: int = 1, emit_commands: bool = False, rerun_stale: bool = False,
    command_line: Optional[str] = None, evaluation: EvalPlan = EvalPlan(), baseline: Optional[str] = None,
    with_runs: Sequence[str] = (), report_only: bool = False, slurm: Optional[SlurmOptions] = None, out=None,
) -> Optional[list[dict]]:
    """The study of ``modes`` (registered neuron names); ``thresholds`` / ``lif_thresholds``: comma-separated
    thresholds of the non-leaky and the leaky modes (None: the defaults); ``evaluation``: what each run's
    evaluation measures; ``baseline``: ``MODE[:U_TH]`` every setting is compared with (default lif:1);
    ``with_runs``: run folders (the original code's, or ours) tabulated beside the study's; ``report_only``:
    train and evaluate nothing, tabulate the finished runs and list the missing ones."""
    out = out or sys.stdout
    base = load_config(config_path, overrides)  # also imports the plugins, whose neurons --modes may name
    overrides = {key: coerce(key, value, "command line") for key, value in overrides.items()}  # recorded typed
    for mode in modes:
        neuron_class(mode)
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {n_seeds}")
    if nproc_per_run > 1 and not devices:
        raise ConfigError("--nproc-per-run needs --devices")
    thr, lif_thr = split_thresholds(modes, thresholds, lif_thresholds)
    runs = plan_runs(modes, thr, lif_thr, [base.seed + i for i in range(n_seeds)])
    base_mode, base_threshold, given = parse_baseline(baseline)
    if given and (base_mode, base_threshold) not in {r.setting for r in runs}:
        raise ConfigError(f"--baseline {baseline} is not a setting of this study; its settings are "
                          + ", ".join(f"{m}:{t:g}" if t is not None else m for m, t in dict.fromkeys(r.setting for r in runs)))
    other_runs = [read_run(folder) for folder in with_runs]  # a malformed folder fails before any training
    folder = Path(study_dir) if study_dir else default_study_dir(config_path, base)
    study = Study(config_path, overrides, runs, folder, command_line, evaluation, (base_mode, base_threshold), other_runs)
    stale = {run: reasons for run in runs if (reasons := study.stale_reasons(run))}
    if dry_run:
        for run in runs:
            status = ("stale" if run in stale else "done" if study.is_done(run)
                      else "to evaluate" if study.is_trained(run) else "pending")
            why = f" ({stale[run]})" if run in stale else ""
            print(f"{status:<11} {run.name}{why}  ->  {study.run_dir(run)}", file=out)
        if stale:
            print(f"{len(stale)} stale run(s): the study refuses them unless given --rerun-stale", file=out)
        return None
    if report_only:
        return _report_only(study, runs, stale, out)
    if stale and not rerun_stale:
        listed = "; ".join(f"{run.name} ({reasons})" for run, reasons in stale.items())
        raise ConfigError(
            f"{len(stale)} run(s) in {folder} were trained with other settings than this command asks for: {listed}; "
            "add --rerun-stale to train them again (the old run folders are kept, renamed to <run>.replaced-<time>), "
            "or give another --study-dir"
        )
    for run, reasons in stale.items():
        moved = move_aside(study.run_dir(run))
        log.info("rerunning %s: %s (the old run is kept in %s)", run.name, reasons, moved)
    if slurm is not None:
        from .slurm import report_command, sbatch_script, submit

        pending = [r for r in runs if not study.is_done(r)]
        report = report_command(command_line or "spikedriven study")
        if slurm.launcher == "sbatch":
            script = sbatch_script([study.shell_command(r, nproc_per_run) for r in pending], report, folder, slurm)
            study.record()
            print(script, file=out)
        else:
            study.record()
            submit([(r.name, study.steps(r, nproc_per_run)) for r in pending], report, folder, slurm, out)
        return None
    if emit_commands:
        for run in runs:
            print(study.shell_command(run, nproc_per_run), file=out)
        return None
    study.record()
    pending = [r for r in runs if not study.is_done(r)]
    log.info("study %s: %d runs, %d finished, %d to do", folder, len(runs), len(runs) - len(pending), len(pending))
    if devices:
        study.run_parallel(pending, devices, nproc_per_run)
    else:
        for i, run in enumerate(pending, 1):
            log.info("[%d/%d] %s", i, len(pending), run.name)
            study.run_inline(run)
    rows = study.write_results()
    print((folder / "results.md").read_text(), file=out)
    return rows


def _report_only(study: Study, runs: list, stale: dict, out) -> list[dict]:
    """The tables of what exists (a stale run is left out, as it would not be mixed in), and what is missing."""
    missing = []
    for run in runs:
        if run in stale:
            missing.append((run, f"stale: {stale[run]}"))
        elif not study.is_done(run):
            missing.append((run, "to evaluate" if study.is_trained(run)
                            else "interrupted" if study.run_dir(run).is_dir() else "not trained"))
    study.runs = [r for r in runs if r not in stale]
    rows = study.write_results()
    print((study.folder / "results.md").read_text(), file=out)
    for run, why in missing:
        print(f"missing  {run.name} ({why})  ->  {study.run_dir(run)}", file=out)
    print(f"{len(runs) - len(missing)} of {len(runs)} runs tabulated; nothing was trained (--report-only)", file=out)
    return rows
