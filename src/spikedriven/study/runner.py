"""The neuron-model study as one command: plan, train, evaluate, tabulate, plot.

A study is a grid of (model, spike mode, threshold, seed) runs sharing one config
(each model takes its own settings from the config's ``models:`` entry, or its
defaults). Each run lives in ``<study>/runs/<model>-<mode>-uth<v>-seed<s>/`` and is
trained with ``--resume auto``, so rerunning the same command skips finished runs
and resumes interrupted ones. ``study.yaml`` records the plan and every override.

A run made with other settings than the study now asks for (its config file
was edited, a flag changed) is "stale": the study refuses to mix it into its
tables, and ``--rerun-stale`` trains it again after moving the old folder aside.
Settings that change how a run is carried out, not what it computes
(``config.RUNTIME_SETTINGS``: the runtime and reporting roles), never make a run stale.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import yaml

from ..analysis.compare import read_runs
from ..analysis.run_labels import resolve_runs
from ..analysis.runs import RunCurve
from ..atomic import write_text_atomic
from ..config import RUNTIME_SETTINGS, Config, coerce, load_config, recorded_config, requested_values
from ..config.original_keys import fold_model_settings
from ..models import architecture_of
from ..runtime import cpu_ids
from ..errors import ConfigError, SpikedrivenError
from ..neurons import neuron_class
from ..engine.resume import setting_changes, show
from ..engine.run_folder import ConsoleHandler, move_aside

from .cost import GridChoices, estimate_line, grid_lines, remaining_epochs
from .plan import (DEFAULT_MODES, Baseline, EvalPlan, PlannedRun, default_study_dir, parse_baseline, parse_list,
                   plan_runs, split_cpus, split_thresholds)
from .tables import write_tables

if TYPE_CHECKING:
    from .slurm import SlurmOptions

log = logging.getLogger("spikedriven.study")  # its own handler: run loggers write to each run's log.txt
log.propagate = False
if not log.handlers:
    _handler = ConsoleHandler()
    _handler.setFormatter(logging.Formatter("study: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

# The defaults of a study's evaluation and baseline (frozen dataclasses: one instance serves every call).
DEFAULT_EVALUATION = EvalPlan()
DEFAULT_BASELINE = Baseline()


class Study:
    def __init__(self, config_path: Optional[str], overrides: dict, runs: list[PlannedRun], folder: Path,
                 command_line: Optional[str] = None, evaluation: EvalPlan = DEFAULT_EVALUATION,
                 baseline: Baseline = DEFAULT_BASELINE, other_runs: Sequence[RunCurve] = ()):
        self.config_path, self.overrides, self.runs, self.folder = config_path, overrides, runs, folder
        self.command_line = command_line  # the study's own command: what resumes it
        self.evaluation, self.baseline, self.other_runs = evaluation, baseline, list(other_runs)
        self.configs = {run: self.run_config(run) for run in runs}  # validates every run before any starts

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(run.model for run in self.runs))

    @property
    def groups(self) -> list[str]:
        """The models, each with the values of the varied keys: what the tables compare neurons within."""
        return list(dict.fromkeys(run.group for run in self.runs))

    def run_values(self, run: PlannedRun) -> dict:
        threshold = {} if run.v_threshold is None else {"v_threshold": run.v_threshold}
        values = {**self.overrides, "model": run.model, "spike_mode": run.mode, **threshold, "seed": run.seed,
                  "output": str(self.run_dir(run))}
        return _with_variant(values, run.variant)

    def run_config(self, run: PlannedRun) -> Config:
        try:
            return load_config(self.config_path, self.run_values(run))
        except ConfigError as e:
            raise ConfigError(f"the study's run {run.name}: {e}") from None

    def run_dir(self, run: PlannedRun) -> Path:
        """``runs/<model>-<neuron>...``; a run of an earlier version, whose folder named no model, is found
        under its old name when it holds that model."""
        folder = self.folder / "runs" / run.name
        legacy = self.folder / "runs" / run.legacy_name
        if not folder.exists() and legacy.is_dir() and _recorded_model(legacy) == run.model:
            return legacy
        return folder

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

    def state(self, run: PlannedRun, stale) -> str:
        """stale, done, to evaluate, interrupted (a checkpoint and no results: it resumes) or pending."""
        if run in stale:
            return "stale"
        if self.is_done(run):
            return "done"
        if self.is_trained(run):
            return "to evaluate"
        return "interrupted" if any(self.run_dir(run).glob("*.pth.tar")) else "pending"

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
            if isinstance(value, dict):  # model_args, neuron_args: KEY=VALUE words, each a YAML scalar
                words = [f"{k}={_yaml_scalar(v)}" for k, v in value.items()]
            else:
                words = list(map(str, value)) if isinstance(value, list) else [str(value)]
            args += ["--" + key.replace("_", "-"), *words]
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

    def done_by_setting(self) -> dict:
        """``{(model, mode, threshold): [finished runs]}``, in the plan's order."""
        groups = {}
        for setting in dict.fromkeys(r.setting for r in self.runs):
            done = [r for r in self.runs if r.setting == setting and self.is_done(r)]
            if done:
                groups[setting] = done
        return groups

    # -------------------------------------------------------------- execution
    def run_inline(self, run: PlannedRun) -> None:
        from ..analysis.evaluation import evaluate_checkpoint
        from ..engine.resume import plan_resume, resolve_config
        from ..engine.trainer import train

        if not self.is_trained(run):
            cfg = self.configs[run]
            plan = plan_resume("auto", False, cfg.output)
            requested, sources = requested_values(self.config_path, self.run_values(run))
            cfg = resolve_config(cfg, requested, plan, sources)
            train(cfg, plan, resume_command=self.command_line, schedule_warning=False)
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
            from ..engine.signals import RunStopped

            for _, proc, handle in active.values():
                proc.wait()
                handle.close()
            again = f"resume with: {self.command_line}" if self.command_line else "rerun the same study command to resume it"
            raise RunStopped(130, f"study interrupted; every run saved where it stopped; {again}") from None
        if failed:
            raise SpikedrivenError(f"{len(failed)} run(s) failed: {', '.join(failed)}; see their .log files in {self.folder / 'runs'}")


def _with_variant(values: dict, variant) -> dict:
    """A run's config values with its varied keys set; a model setting among them joins the study's model_args."""
    if not variant:
        return values
    varied = fold_model_settings(dict(variant))
    if "model_args" in varied:
        varied["model_args"] = {**(values.get("model_args") or {}), **varied["model_args"]}
    return {**values, **varied}


def _yaml_scalar(value) -> str:
    """``value`` as YAML writes it, so that reading the word back gives it again ('0011' stays text)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _recorded_model(run_dir: Path) -> Optional[str]:
    """The model a run folder's config.yaml records (an earlier version's default, sdt, when it names none)."""
    try:
        recorded = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return recorded.get("model", "sdt") if isinstance(recorded, dict) else None


def run_study(
    config_path: Optional[str], overrides: dict, modes: Optional[list[str]] = None, thresholds: Optional[str] = None,
    lif_thresholds: Optional[str] = None, n_seeds: Optional[int] = None, *, study_dir: Optional[str] = None,
    dry_run: bool = False,
    devices: Optional[list[str]] = None, nproc_per_run: int = 1, emit_commands: bool = False, rerun_stale: bool = False,
    command_line: Optional[str] = None, evaluation: EvalPlan = DEFAULT_EVALUATION, baseline: Optional[str] = None,
    with_runs: Sequence[str] = (), report_only: bool = False, slurm: Optional[SlurmOptions] = None, out=None,
    models: Optional[list[str]] = None, vary: Sequence[tuple[str, list]] = (),
) -> Optional[list[dict]]:
    """The study of ``modes`` (registered neuron names; None: lif, if, if_soft) in each of ``models``
    (registered model names; None: the config's model), ``n_seeds`` seeds each (None: one); ``thresholds`` /
    ``lif_thresholds``: comma-separated thresholds of the non-leaky and the leaky modes (None: the defaults;
    what was given or not is said in the study's overview); ``evaluation``: what each run's
    evaluation measures; ``vary``: further grid axes, (config key, its values) each (``--vary``);
    ``baseline``: ``MODE[:U_TH]`` or ``KEY=VALUE`` of a varied key, what every setting is compared with;
    ``with_runs``: run folders (the original code's, or ours) tabulated beside the study's; ``report_only``:
    train and evaluate nothing, tabulate the finished runs and list the missing ones."""
    out = out or sys.stdout
    choices = GridChoices(models, modes, thresholds, lif_thresholds, n_seeds, vary)
    modes = modes or parse_list(DEFAULT_MODES, str, "--modes")
    n_seeds = 1 if n_seeds is None else n_seeds
    base = load_config(config_path, overrides)  # also imports the plugins, whose neurons --modes may name
    # recorded typed, a model's settings (--depth, --set depth=2) under model_args
    overrides = {key: coerce(key, value, "command line") for key, value in fold_model_settings(overrides).items()}
    models = _study_models(models, overrides, base)
    _check_grid(modes, n_seeds, nproc_per_run, devices)
    thr, lif_thr = split_thresholds(modes, thresholds, lif_thresholds)
    runs = plan_runs(models, modes, thr, lif_thr, [base.seed + i for i in range(n_seeds)], vary)
    chosen = _study_baseline(baseline, vary, runs)
    # a malformed folder or label fails before any training
    other_runs = read_runs(resolve_runs(with_runs)) if with_runs else []
    folder = Path(study_dir) if study_dir else default_study_dir(config_path, base)
    study = Study(config_path, overrides, runs, folder, command_line, evaluation, chosen, other_runs)
    stale = {run: reasons for run in runs if (reasons := study.stale_reasons(run))}
    parallel = max(1, len(devices or []) // nproc_per_run)
    if dry_run:
        return _dry_run(study, choices, stale, parallel, out)
    if report_only:
        return _report_only(study, runs, stale, out)
    _replace_stale(study, stale, rerun_stale)
    if slurm is not None:
        return _launch_on_slurm(study, slurm, nproc_per_run, out)
    if emit_commands:
        for run in runs:
            print(study.shell_command(run, nproc_per_run), file=out)
        return None
    return _run_here(study, choices, stale, parallel, devices, nproc_per_run, out)


def _study_models(models: Optional[list[str]], overrides: dict, base: Config) -> list[str]:
    """The study's models (None: the config's), each a registered architecture."""
    if "model" in overrides and models:
        raise ConfigError("--model names one model and --models the study's; give --models alone")
    models = list(dict.fromkeys(models or [base.model]))
    for model in models:
        architecture_of(model)
    return models


def _check_grid(modes: list[str], n_seeds: int, nproc_per_run: int, devices: Optional[list[str]]) -> None:
    """Every mode a registered neuron, at least one seed, and devices for several processes per run."""
    for mode in modes:
        neuron_class(mode)
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {n_seeds}")
    if nproc_per_run > 1 and not devices:
        raise ConfigError("--nproc-per-run needs --devices")


def _study_baseline(baseline: Optional[str], vary: Sequence[tuple[str, list]], runs: list[PlannedRun]) -> Baseline:
    """``--baseline`` read; a neuron setting given must be one the study trains."""
    chosen, given = parse_baseline(baseline, vary)
    neurons = dict.fromkeys((r.mode, r.v_threshold) for r in runs)
    if given and not chosen.variant and (chosen.mode, chosen.v_threshold) not in neurons:
        raise ConfigError(f"--baseline {baseline} is not a setting of this study; its settings are "
                          + ", ".join(f"{m}:{t:g}" if t is not None else m for m, t in neurons))
    return chosen


def _dry_run(study: Study, choices: GridChoices, stale: dict, parallel: int, out) -> None:
    """``--dry-run``: every run's state and folder, then the study's overview; nothing is trained."""
    for run in study.runs:
        state = study.state(run, stale)
        why = f" ({stale[run]})" if run in stale else _progress(study, run) if state == "interrupted" else ""
        print(f"{state:<11} {run.name}{why}  ->  {study.run_dir(run)}", file=out)
    if stale:
        print(f"{len(stale)} stale run(s): the study refuses them unless given --rerun-stale", file=out)
    print("", *_overview(study, choices, stale, parallel), sep="\n", file=out)


def _replace_stale(study: Study, stale: dict, rerun_stale: bool) -> None:
    """Refuse the stale runs, or with ``--rerun-stale`` move their folders aside so that they train again."""
    if stale and not rerun_stale:
        listed = "; ".join(f"{run.name} ({reasons})" for run, reasons in stale.items())
        raise ConfigError(
            f"{len(stale)} run(s) in {study.folder} were trained with other settings than this command asks for: "
            f"{listed}; add --rerun-stale to train them again (the old run folders are kept, renamed to "
            "<run>.replaced-<time>), or give another --study-dir"
        )
    for run, reasons in stale.items():
        moved = move_aside(study.run_dir(run))
        log.info("rerunning %s: %s (the old run is kept in %s)", run.name, reasons, moved)


def _launch_on_slurm(study: Study, slurm: SlurmOptions, nproc_per_run: int, out) -> None:
    """The unfinished runs as a Slurm job array: printed as an sbatch script, or submitted through submitit."""
    from .slurm import report_command, sbatch_script, submit

    pending = [r for r in study.runs if not study.is_done(r)]
    report = report_command(study.command_line or "spikedriven study")
    if slurm.launcher == "sbatch":
        script = sbatch_script([study.shell_command(r, nproc_per_run) for r in pending], report, study.folder, slurm)
        study.record()
        print(script, file=out)
    else:
        study.record()
        submit([(r.name, study.steps(r, nproc_per_run)) for r in pending], report, study.folder, slurm, out)


def _run_here(study: Study, choices: GridChoices, stale: dict, parallel: int, devices: Optional[list[str]],
              nproc_per_run: int, out) -> list[dict]:
    """Train and evaluate the unfinished runs on this machine (in parallel over ``devices``, or one after the
    other in this process), then write and print the tables."""
    study.record()
    runs = study.runs
    pending = [r for r in runs if not study.is_done(r)]
    log.info("study %s: %d runs, %d finished, %d to do", study.folder, len(runs), len(runs) - len(pending),
             len(pending))
    for line in _overview(study, choices, stale, parallel):
        (log.warning if line.startswith("warning") else log.info)("%s", line)
    if devices:
        study.run_parallel(pending, devices, nproc_per_run)
    else:
        for i, run in enumerate(pending, 1):
            log.info("[%d/%d] %s", i, len(pending), run.name)
            study.run_inline(run)
    rows = write_tables(study)
    print((study.folder / "results.md").read_text(), file=out)
    return rows


def _overview(study: Study, choices: GridChoices, stale, parallel: int) -> list[str]:
    """What the study will cost, and the warnings of its recipe, each said once for all its runs."""
    from ..engine.recipe import schedule_warning

    lines = grid_lines(study, choices, list(stale))
    for text in dict.fromkeys(filter(None, (schedule_warning(cfg) for cfg in study.configs.values()))):
        lines.append(f"warning: {text}")
    return lines + [estimate_line(study, list(stale), parallel)]


def _progress(study: Study, run: PlannedRun) -> str:
    total = study.configs[run].total_epochs
    return f" ({total - remaining_epochs(study, run)} of {total} epochs trained)"


def _report_only(study: Study, runs: list, stale: dict, out) -> list[dict]:
    """The tables of what exists (a stale run is left out, as it would not be mixed in), and what is missing."""
    missing = []
    for run in runs:
        if run in stale:
            missing.append((run, f"stale: {stale[run]}"))
        elif not study.is_done(run):
            state = study.state(run, stale)
            missing.append((run, "not trained" if state == "pending" else state))
    study.runs = [r for r in runs if r not in stale]
    rows = write_tables(study)
    print((study.folder / "results.md").read_text(), file=out)
    for run, why in missing:
        print(f"missing  {run.name} ({why})  ->  {study.run_dir(run)}", file=out)
    print(f"{len(runs) - len(missing)} of {len(runs)} runs tabulated; nothing was trained (--report-only)", file=out)
    return rows
