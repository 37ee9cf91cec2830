"""The ``spikedriven`` command line: one entry point, one subcommand per task.

Errors meant for the user (``SpikedrivenError``) print one sentence and exit
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import traceback
from typing import Callable

from . import __version__
from .errors import SpikedrivenError, user_message


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")


def _add_train(sub) -> None:
    from .config import add_config_flags

    p = sub.add_parser("train", help="train a model (the study's train.py)",
                       description="Train a Spike-driven Transformer. Every config key is also a flag.")
    p.add_argument("-c", "--config", help="YAML config file (e.g. conf/cifar10/2_256_300E_t4.yml)")
    p.add_argument("--resume", metavar="CKPT|RUN_DIR|auto",
                   help="continue a run from a checkpoint or run folder; 'auto' picks the newest valid checkpoint in --output")
    p.add_argument("--no-resume-opt", action="store_true",
                   help="with --resume: load the weights only and start a new run (fresh optimizer, epoch 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="train a new run into an --output folder that holds one: the old run is moved aside "
                        "(renamed to <folder>.replaced-<time>), never deleted")
    original = p.add_argument_group("the original train.py's flags")
    original.add_argument("--experiment", metavar="NAME",
                          help="name the run folder NAME under --output (default output/train), as timm's train.py does")
    original.add_argument("--local-rank", "--local_rank", dest="local_rank", metavar="N",
                          help="set by torch.distributed.launch; the rank is read from the environment it also sets")
    _common(p)
    add_config_flags(p)
    p.set_defaults(func=_run_train)


def _run_train(args, argv_hint: str) -> int:
    from .config import load_config, overrides_from_args, requested_values
    from .errors import ConfigError
    from .resume import plan_resume, resolve_config
    from .training import train

    overrides = overrides_from_args(args)
    if args.experiment:
        overrides["experiment"] = args.experiment
    if args.local_rank is not None:  # torch.distributed.launch gives it as a flag and sets LOCAL_RANK too
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    cfg = load_config(args.config, overrides)
    plan = plan_resume(args.resume, args.no_resume_opt, cfg.output)
    if args.overwrite and plan.full:
        raise ConfigError("--overwrite starts a new run and --resume continues one; give one of them "
                          "(or --no-resume-opt to start a new run from the checkpoint's weights)")
    requested, sources = requested_values(args.config, overrides)
    cfg = resolve_config(cfg, requested, plan, sources)
    train(cfg, plan, command_hint=argv_hint, overwrite=args.overwrite)
    return 0


def _add_eval(sub) -> None:
    from .config import add_config_flags

    p = sub.add_parser(
        "eval", help="evaluate a checkpoint: accuracy, firing rates, SOPs, energy (the study's firing_num.py)",
        description="Evaluate a checkpoint (ours or the original code's) and write metrics.json, firing_rates.csv, "
                    "energy.csv and plots. Neuron settings come from the checkpoint.",
    )
    p.add_argument("--checkpoint", "--resume", dest="checkpoint", required=True, metavar="CKPT|RUN_DIR",
                   help="checkpoint to evaluate, or a run folder (its last.pth.tar, the final model); "
                        "--resume is the study's spelling")
    p.add_argument("-c", "--config", help="YAML config; needed for checkpoints of the original code, which carry none")
    p.add_argument("--override", action="store_true",
                   help="allow flags that contradict the checkpoint's neuron/model settings")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="evaluate on the test set or on the run's held-out validation split")
    p.add_argument("--eval-output", "--output", dest="eval_output", metavar="DIR",
                   help="report folder (default: eval_<name> next to the checkpoint; with --override, "
                        "eval_<name>-override-<setting>-<value>)")
    _energy_flags(p)
    p.add_argument("--speed", action="store_true",
                   help="also time inference (images/s and latency at batch 1 and the evaluation batch), with the "
                        "fused neuron kernels and with the per-step loop; writes speed.csv")
    p.add_argument("--speed-repeats", type=int, default=10, metavar="N",
                   help="timed forwards per measurement, after 3 warm-up ones; the median is reported (default 10)")
    p.add_argument("--membrane", action="store_true",
                   help="also record every neuron layer's membrane potential per time step (runs the per-step "
                        "loop); writes membrane.csv, membrane_hist.csv and membrane.png")
    p.add_argument("--use-ema", action="store_true", help="evaluate the checkpoint's EMA weights")
    p.add_argument("--large-valid", action="store_true",
                   help="evaluate at 288 px (the original's flag for ImageNet; the same as --eval-img-size 288)")
    p.add_argument("--no-resume-opt", action="store_true", help="accepted for the study's command line; evaluation never loads an optimizer")
    _common(p)
    add_config_flags(p, exclude=("output",))
    p.set_defaults(func=_run_eval)


def _energy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy", default="sdt", metavar="MODELS",
                   help="comma-separated energy models: sdt (the SDT paper's convention, default), neuron (+ neuron "
                        "steps, attention masks and sums, residuals), lemaire (+ memory traffic and addressing)")
    p.add_argument("--energy-constants", nargs="+", default=[], metavar="KEY=PJ",
                   help="energy constants in pJ over the defaults, e.g. e_read=2.5 e_mul=0.2 (every constant a model "
                        "uses is printed with its result)")
    p.add_argument("--e-mac", type=float, metavar="PJ", help="energy of one MAC in pJ (default 4.6; e_mac=PJ)")
    p.add_argument("--e-ac", type=float, metavar="PJ", help="energy of one AC in pJ (default 0.9; e_ac=PJ)")


def energy_choice(args) -> tuple[list[str], dict]:
    """``--energy`` and its constants (``--energy-constants``, ``--e-mac``, ``--e-ac``), checked."""
    from .analysis import resolve_energy_models
    from .config import parse_key_values
    from .errors import ConfigError

    names = [n.strip() for n in args.energy.split(",") if n.strip()]
    constants = parse_key_values(args.energy_constants, "--energy-constants")
    for key, value in constants.items():
        if isinstance(value, str):  # YAML reads 1e-3 as text
            with contextlib.suppress(ValueError):
                constants[key] = float(value)
    for flag, key in (("e_mac", "e_mac"), ("e_ac", "e_ac")):
        value = getattr(args, flag)
        if value is None:
            continue
        if key in constants and constants[key] != value:
            raise ConfigError(f"--{flag.replace('_', '-')} {value:g} and --energy-constants {key}={constants[key]} "
                              "disagree; give one of them")
        constants[key] = value
    models = dict.fromkeys(["sdt", *names])
    resolve_energy_models(list(models), constants)  # every name and constant checked before anything runs
    return names, constants


def _run_eval(args, argv_hint: str) -> int:
    from .config import overrides_from_args
    from .errors import ConfigError
    from .evaluation import evaluate_checkpoint, pick_checkpoint, print_report

    energy, constants = energy_choice(args)
    if args.speed_repeats < 1:
        raise ConfigError(f"--speed-repeats must be >= 1, got {args.speed_repeats}")
    overrides = overrides_from_args(args)
    if args.large_valid:
        overrides.setdefault("eval_img_size", 288)
    if str(overrides.get("log_wandb", "false")).lower() != "false":  # firing_num.py shares train.py's flags
        logging.getLogger("spikedriven").warning("--log-wandb logs training runs; an evaluation's figures are in "
                                                 "its report folder")
    checkpoint, note = pick_checkpoint(args.checkpoint)
    if note:  # a run folder was given: say which of its checkpoints
        print(f"evaluating {checkpoint}{note}")
    result, files = evaluate_checkpoint(
        checkpoint, args.config, overrides, override=args.override, split=args.split,
        output=args.eval_output, energy=energy, energy_constants=constants, use_ema=args.use_ema,
        speed=args.speed, speed_repeats=args.speed_repeats, membrane=args.membrane,
    )
    print_report(result, files)
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="put several evaluated runs side by side (table and plot)")
    p.add_argument("inputs", nargs="+", metavar="RUN_OR_METRICS",
                   help="metrics.json files, evaluation folders, or run folders (ours, or the original code's with "
                        "summary.csv and args.yaml): their evaluations and training curves")
    p.add_argument("--output", default="output/compare", help="folder for compare.png (default output/compare)")
    _common(p)
    p.set_defaults(func=_run_compare)


def _run_compare(args, argv_hint: str) -> int:
    from .reports import compare

    table, rows = compare(args.inputs, out_dir=args.output)
    print(table)
    if rows:
        print(f"plot: {args.output}/compare.png")
    return 0


def _add_study(sub) -> None:
    from .config import add_config_flags

    p = sub.add_parser(
        "study", help="the neuron-model study: train and evaluate a grid of modes x thresholds x seeds",
        description="Plan, train and evaluate every (mode, threshold, seed) run, then write results.md, "
                    "results.csv, curves.png and firing.png. Rerunning the same command skips finished runs "
                    "and resumes interrupted ones.",
    )
    p.add_argument("-c", "--config", help="YAML config shared by all runs")
    p.add_argument("--modes", default="lif,if,if_soft", help="comma-separated spike modes (default lif,if,if_soft)")
    p.add_argument("--thresholds", help="thresholds for the modes other than LIF (default 0.8,1.0,1.2)")
    p.add_argument("--lif-thresholds", help="thresholds for LIF (default 1.0)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per setting: seed, seed+1, ... (default 1)")
    p.add_argument("--study-dir", help="study folder (default output/study/<dataset>-<config name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list the planned runs and whether each is done, pending or stale")
    p.add_argument("--rerun-stale", action="store_true",
                   help="train again the runs made with other settings than the study now asks for (their old "
                        "folders are kept, renamed to <run>.replaced-<time>); without it the study refuses them")
    p.add_argument("--devices", help="comma-separated GPU ids, or cpu entries (cpu,cpu: two CPU runs at once): "
                                     "run one job per device (group) in parallel")
    p.add_argument("--nproc-per-run", type=int, default=1, help="GPUs per run, launched with torchrun (needs --devices)")
    p.add_argument("--emit-commands", action="store_true", help="print one shell command per run (for Slurm) and exit")
    slurm = p.add_argument_group("clusters: a Slurm job array, one task per run, and a job that writes the tables")
    slurm.add_argument("--launcher", choices=("slurm", "local"),
                       help="submit the study through submitit: slurm (sbatch on this cluster; returns once "
                            "submitted) or local (the same jobs as processes here, waited for; to try it out)")
    slurm.add_argument("--emit-sbatch", action="store_true",
                       help="print the equivalent #SBATCH --array script (one task per unfinished run, requeued on "
                            "preemption) and the command that submits the tables' job after it, and exit")
    slurm.add_argument("--partition", help="the Slurm partition")
    slurm.add_argument("--gpus-per-run", type=int, default=1, metavar="N", help="GPUs per run (default 1)")
    slurm.add_argument("--cpus-per-run", type=int, metavar="N", help="CPU cores per run (default: the partition's)")
    slurm.add_argument("--max-parallel", type=int, metavar="N", help="at most N runs at once")
    slurm.add_argument("--time", metavar="D-HH:MM:SS",
                       help="Slurm's time limit per job (needed with --launcher slurm); a run that reaches it is "
                            "requeued and resumes")
    p.add_argument("--report-only", action="store_true",
                   help="train and evaluate nothing: write the tables from the finished runs and list the missing ones")
    p.add_argument("--baseline", metavar="MODE[:U_TH]",
                   help="the setting every other is compared with: difference of mean final top-1, its 95 %% "
                        "confidence interval and p-value (default lif:1)")
    _energy_flags(p)
    p.add_argument("--speed", action="store_true",
                   help="time each run's inference (fused path and per-step loop); adds speed columns")
    p.add_argument("--with-runs", nargs="+", default=[], metavar="RUN_DIR",
                   help="run folders of the original code (summary.csv + args.yaml) or of ours, tabulated beside "
                        "the study's runs: best epoch, final, mean of the last 10 epochs")
    _common(p)
    add_config_flags(p, exclude=("spike_mode", "v_threshold", "output"))
    p.set_defaults(func=_run_study)


def _run_study(args, argv_hint: str) -> int:
    from .config import overrides_from_args
    from .errors import ConfigError
    from .study import EvalPlan, check_devices, parse_list, parse_sets, run_study

    overrides = {**parse_sets(args.set), **overrides_from_args(args)}
    for key in ("spike_mode", "v_threshold", "output"):
        if key in overrides:
            raise ConfigError(f"{key} is set by the study itself; use --modes / --thresholds / --study-dir")
    modes = parse_list(args.modes, str, "--modes")
    if args.nproc_per_run < 1:
        raise ConfigError("--nproc-per-run must be >= 1")
    devices = parse_list(args.devices, str, "--devices") if args.devices else None
    if devices and not args.emit_commands:  # emitted commands run elsewhere, on that machine's GPUs
        check_devices(devices)
    slurm = None
    if args.emit_sbatch and args.launcher:
        raise ConfigError("--emit-sbatch prints a job script and --launcher submits the jobs: give one of them")
    if args.emit_sbatch or args.launcher:
        from .slurm import SlurmOptions

        slurm = SlurmOptions(args.launcher or "sbatch", args.partition, args.gpus_per_run, args.max_parallel,
                             args.time, args.cpus_per_run).check()
        if devices:
            raise ConfigError("--devices runs the study on this machine's GPUs; with --launcher / --emit-sbatch "
                              "Slurm gives each run its GPUs (--gpus-per-run)")
    elif args.max_parallel is not None or args.partition or args.time or args.cpus_per_run is not None:
        raise ConfigError("--partition, --max-parallel, --cpus-per-run and --time go with --launcher or --emit-sbatch")
    if args.report_only and (args.dry_run or args.emit_commands or slurm):
        raise ConfigError("--report-only writes the tables of what exists; --dry-run, --emit-commands, --emit-sbatch "
                          "and --launcher plan or start runs: give one")
    energy, constants = energy_choice(args)
    evaluation = EvalPlan(tuple(energy), tuple(sorted(constants.items())), args.speed)
    run_study(
        args.config, overrides, modes, args.thresholds, args.lif_thresholds, args.seeds, study_dir=args.study_dir,
        dry_run=args.dry_run, devices=devices, nproc_per_run=args.nproc_per_run, emit_commands=args.emit_commands,
        rerun_stale=args.rerun_stale, command_line=args.command_line, evaluation=evaluation, baseline=args.baseline,
        with_runs=args.with_runs, report_only=args.report_only, slurm=slurm,
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """No silent prefix matching: ``--epoch 2`` is not ``--epochs`` (subcommands are built from this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def unknown_flags_message(parser: argparse.ArgumentParser, unknown: list) -> str:
    """``unrecognized arguments`` with the closest flag of this subcommand for each unknown one."""
    import difflib

    flags = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    parts = []
    for word in unknown:
        text = f"'{word}'"
        if word.startswith("-"):
            guess = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.6)
            if guess:
                text += f" (did you mean {guess[0]}?)"
        parts.append(text)
    return "unrecognized arguments: " + ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spikedriven", description="Train, evaluate and study Spike-driven Transformers with LIF / IF neurons."
    )
    parser.add_argument("--version", action="version", version=f"spikedriven {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _add_neurons(sub) -> None:
    p = sub.add_parser("neurons", help="list the registered neurons: equations, settings and defaults, cost per step",
                       description="List every registered neuron (built in, and those of --plugins) with its "
                                   "equations, its settings and their defaults, and the surrogate gradients.")
    p.add_argument("--plugins", nargs="+", default=[], metavar="FILE_OR_MODULE",
                   help="also load neurons of your own from these Python files or modules")
    _common(p)
    p.set_defaults(func=_run_neurons)


def _run_neurons(args, argv_hint: str) -> int:
    from .neurons import describe_neurons, load_plugins

    load_plugins(args.plugins)
    print(describe_neurons())
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's model as shareable weights: model.safetensors, timm config.json, README.md",
                       description="Export a run's model (a run folder: its final model; or a checkpoint file) into a "
                                   "folder timm loads: model.safetensors, a Hub-style config.json and a model card.")
    p.add_argument("run", metavar="RUN", help="run folder (its last.pth.tar, else best.pth.tar) or checkpoint file")
    p.add_argument("--output", required=True, metavar="DIR", help="folder to write the export into")
    p.add_argument("--overwrite", action="store_true", help="replace another export already in --output")
    _common(p)
    p.set_defaults(func=_run_export)


def _run_export(args, argv_hint: str) -> int:
    from .export import export_run, load_lines

    written = export_run(args.run, args.output, overwrite=args.overwrite)
    print(f"exported {args.run} to {args.output}: " + ", ".join(p.name for p in written))
    print("load it with timm:")
    print("\n".join("    " + line for line in load_lines(args.output)))
    return 0


def _add_info(sub) -> None:
    from .config import add_config_flags

    p = sub.add_parser("info", help="what this machine and install can do: versions, devices, fused kernels, "
                                    "datasets, the model of a config",
                       description="Report package versions, CUDA / MPS / CPU cores, whether the fused neuron "
                                   "kernels can run, which datasets lie under --data-dir, and the parameters and "
                                   "dense MACs of the model a config describes (the default config without -c).")
    p.add_argument("-c", "--config", help="YAML config whose model (and data_dir) to report")
    p.add_argument("--checksums", action="store_true",
                   help="also compare CIFAR files with the official MD5 sums (reads every file, takes seconds)")
    _common(p)
    add_config_flags(p)  # --data-dir among them: the same folder a run with these flags would read
    p.set_defaults(func=_run_info)


def _run_info(args, argv_hint: str) -> int:
    from .config import load_config, overrides_from_args
    from .info import info_report

    cfg = load_config(args.config, overrides_from_args(args))
    print(info_report(cfg, args.config, checksums=args.checksums))
    return 0


def _add_completion(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, tcsh or fish)",
                       description="Print the completion script of spikedriven for a shell. Enable it with, e.g., "
                                   "`eval \"$(spikedriven completion bash)\"` in ~/.bashrc, or for zsh write it "
                                   "to a file named _spikedriven in a folder of your $fpath.")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh", "fish"), help="the shell")
    _common(p)
    p.set_defaults(func=_run_completion)


def _run_completion(args, argv_hint: str) -> int:
    from .completion import completion_script

    print(completion_script(build_parser(), args.shell))
    return 0


SUBCOMMANDS: list[Callable] = [_add_train, _add_eval, _add_compare, _add_study, _add_neurons, _add_export, _add_info,
                               _add_completion]


def _plugins_in(argv: list) -> list:
    """The values of ``--plugins`` on the command line, loaded before the parser is built so that
    their neurons' settings get flags of their own."""
    found, i = [], 0
    while i < len(argv):
        if argv[i].startswith("--plugins="):
            found += argv[i].partition("=")[2].replace(",", " ").split()
        elif argv[i] == "--plugins":
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                found += argv[i].replace(",", " ").split()
        i += 1
    return found


# What a Ctrl-C outside a run's own stop handling (start-up, evaluation, tables) leaves behind.
INTERRUPTED = {
    "train": "interrupted during start-up: nothing was trained",
    "eval": "interrupted: the evaluation was not written",
    "study": "interrupted between runs; every finished run is kept",
}


class _Interrupts:
    """Notes that a Ctrl-C came while the command runs: one that lands inside an import (torch and
    scikit-learn import lazily) can surface as an ImportError or AttributeError of a half-initialised
    module instead of KeyboardInterrupt, and must still be reported as the interrupt it was."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def watched(self):
        import threading

        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        previous = signal.signal(signal.SIGINT, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def main(argv=None, prog_hint: str = "spikedriven") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    interrupts = _Interrupts()
    with interrupts.watched():
        return _main(argv, prog_hint, interrupts)


def _main(argv: list, prog_hint: str, interrupts: _Interrupts) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        from .neurons import load_plugins

        load_plugins(_plugins_in(argv))
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # the subcommand's usage, not the top level's, and a suggestion
            sub = _subparser(parser, args.command)
            sub.error(unknown_flags_message(sub, unknown))
        args.command_line = shlex.join(["spikedriven", *argv])  # the whole command, for messages that repeat it
        hint = f"{prog_hint} {args.command}" if prog_hint == "spikedriven" else prog_hint
        return args.func(args, hint)
    except SpikedrivenError as e:
        if "--debug" in argv:
            traceback.print_exc()
        logging.getLogger("spikedriven").debug("error", exc_info=True)
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except _run_stopped() as e:
        print(str(e), file=sys.stderr)
        return e.code
    except (KeyboardInterrupt, Exception) as e:
        if not (isinstance(e, KeyboardInterrupt) or interrupts.seen):
            raise  # a bug: keep its traceback
        message = INTERRUPTED.get(command, "interrupted")
        if command == "study":
            message += f"; continue it with `{shlex.join(['spikedriven', *argv])}`"
        print(message, file=sys.stderr)
        return 130


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _run_stopped():
    from .training import RunStopped

    return RunStopped


if __name__ == "__main__":
    sys.exit(main())
