"""The subcommands over many runs: study (the grid, on this machine or on Slurm) and compare."""

from __future__ import annotations


from .common import _common, _energy_flags, energy_choice


RUN_SYNTAX = ("a run folder (ours, or the original code's: summary.csv or summary1.csv, summary2.csv, ... alone or "
              "beside args.yaml and/or its *.log), optionally labelled with the neuron it trained: DIR:MODE@U_TH "
              "(runs/a:if_soft@1.2) or DIR:MODE (the neuron's default threshold); several folders that are the "
              "segments of one resumed run: DIR1,DIR2[:LABEL]")
LABELS_HELP = ("YAML file labelling run folders (relative to the file): labels: {FOLDER: MODE@U_TH}, and runs: "
               "[{folders: [A, B], label: MODE@U_TH, name: NAME}] for the segments of one run; a label on the "
               "command line wins")


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="put several evaluated runs side by side (table and plot)")
    p.add_argument("inputs", nargs="*", metavar="RUN_OR_METRICS",
                   help="metrics.json files, evaluation folders, or runs, each " + RUN_SYNTAX + ": their "
                        "evaluations and training curves (with --labels and no run given: the file's runs)")
    p.add_argument("--labels", metavar="FILE", help=LABELS_HELP)
    p.add_argument("--output", default="output/compare", help="folder for compare.png (default output/compare)")
    _common(p)
    p.set_defaults(func=_run_compare)


def _run_compare(args, argv_hint: str) -> int:
    from ..analysis.compare import compare

    table, rows = compare(args.inputs, out_dir=args.output, labels_file=args.labels)
    print(table)
    if rows:
        print(f"plot: {args.output}/compare.png")
    return 0


def _add_study(sub) -> None:
    from ..config import add_config_flags

    p = sub.add_parser(
        "study", help="the neuron-model study: train and evaluate a grid of models x modes x thresholds x seeds",
        description="Plan, train and evaluate every (model, mode, threshold, seed) run, then write results.md, "
                    "results.csv, curves.png and firing.png, comparing the neurons within each model. Rerunning "
                    "the same command skips finished runs and resumes interrupted ones.",
    )
    p.add_argument("-c", "--config", help="YAML config shared by all runs")
    p.add_argument("--models", help="comma-separated models (default: the config's model); each takes its own "
                                    "settings from the config's models: {NAME: {...}} entry, or its defaults")
    p.add_argument("--modes", help="comma-separated spike modes (default lif,if,if_soft)")
    p.add_argument("--thresholds", help="thresholds for the modes other than LIF (default 0.8,1.0,1.2)")
    p.add_argument("--lif-thresholds", help="thresholds for LIF (default 1.0)")
    p.add_argument("--seeds", type=int, help="seeds per setting: seed, seed+1, ... (default 1)")
    p.add_argument("--study-dir", help="study folder (default output/study/<dataset>-<config name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run (repeatable)")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                   help="a further grid axis: every run is trained once per value of the config key (repeatable: "
                        "every combination), e.g. --vary rpe_mode=conv,linear,dilated or --vary encoding=direct,rate; "
                        "the tables compare each value with the first (or --baseline KEY=VALUE) for the same neuron")
    p.add_argument("--dry-run", action="store_true",
                   help="list the planned runs and whether each is done, interrupted, pending or stale, the grid "
                        "each flag (or its default) expands to, and an estimate of the time the training takes")
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
                        "confidence interval and p-value (default lif:1; with --vary: the first value, or "
                        "KEY=VALUE of a varied key)")
    _energy_flags(p)
    p.add_argument("--speed", action="store_true",
                   help="time each run's inference (fused path and per-step loop); adds speed columns")
    p.add_argument("--with-runs", nargs="+", default=[], metavar="RUN_DIR[:MODE@U_TH]",
                   help="run folders of the original code (summary files, with args.yaml or its log or neither) or "
                        "of ours, tabulated beside the study's runs (best epoch, final, mean of the last 10 epochs); "
                        "DIR:if_soft@1.2 labels a folder whose neuron is not recorded, DIR1,DIR2:LABEL joins a "
                        "resumed run's folders; runs whose neuron is known also get rows in the accuracy table, by "
                        "setting, compared with the baseline among them")
    _common(p)
    add_config_flags(p, exclude=("spike_mode", "v_threshold", "output"))
    p.set_defaults(func=_run_study)


def _run_study(args, argv_hint: str) -> int:
    from ..errors import ConfigError
    from ..study.plan import EvalPlan, parse_list
    from ..study.runner import run_study

    overrides, vary = _study_settings(args)
    modes = parse_list(args.modes, str, "--modes") if args.modes is not None else None
    models = parse_list(args.models, str, "--models") if args.models else None
    devices = _study_devices(args)
    slurm = _slurm_options(args, devices)
    if args.report_only and (args.dry_run or args.emit_commands or slurm):
        raise ConfigError("--report-only writes the tables of what exists; --dry-run, --emit-commands, --emit-sbatch "
                          "and --launcher plan or start runs: give one")
    energy, constants = energy_choice(args)
    evaluation = EvalPlan(tuple(energy), tuple(sorted(constants.items())), args.speed)
    run_study(
        args.config, overrides, modes, args.thresholds, args.lif_thresholds, args.seeds, study_dir=args.study_dir,
        dry_run=args.dry_run, devices=devices, nproc_per_run=args.nproc_per_run, emit_commands=args.emit_commands,
        rerun_stale=args.rerun_stale, command_line=args.command_line, evaluation=evaluation, baseline=args.baseline,
        with_runs=args.with_runs, report_only=args.report_only, slurm=slurm, models=models, vary=vary,
    )
    return 0


def _study_settings(args) -> tuple[dict, list]:
    """The overrides for every run (--set and the config flags) and the --vary axes; a key the study sets
    itself, or one both set and varied, is refused."""
    from ..config import overrides_from_args
    from ..errors import ConfigError
    from ..study.plan import parse_sets, parse_vary

    overrides = {**parse_sets(args.set), **overrides_from_args(args)}
    vary = parse_vary(args.vary)
    both = [key for key, _ in vary if key in overrides]
    if both:
        raise ConfigError(f"{', '.join(both)} is both set for every run and varied (--vary); give one")
    for key in ("spike_mode", "v_threshold", "output"):
        if key in overrides:
            raise ConfigError(f"{key} is set by the study itself; use --modes / --thresholds / --study-dir")
    return overrides, vary


def _study_devices(args):
    """--devices as a list (None: not given), checked against this machine's GPUs when the runs run here."""
    from ..errors import ConfigError
    from ..study.plan import check_devices, parse_list

    if args.nproc_per_run < 1:
        raise ConfigError("--nproc-per-run must be >= 1")
    devices = parse_list(args.devices, str, "--devices") if args.devices else None
    if devices and not args.emit_commands:  # emitted commands run elsewhere, on that machine's GPUs
        check_devices(devices)
    return devices


def _slurm_options(args, devices):
    """The Slurm options of --launcher or --emit-sbatch (None: neither given); the Slurm flags without either,
    or with --devices, are refused."""
    from ..errors import ConfigError

    if args.emit_sbatch and args.launcher:
        raise ConfigError("--emit-sbatch prints a job script and --launcher submits the jobs: give one of them")
    if not (args.emit_sbatch or args.launcher):
        if args.max_parallel is not None or args.partition or args.time or args.cpus_per_run is not None:
            raise ConfigError("--partition, --max-parallel, --cpus-per-run and --time go with --launcher or "
                              "--emit-sbatch")
        return None
    from ..study.slurm import SlurmOptions
    from .main import main  # the report job's entry: the study's own command with --report-only

    slurm = SlurmOptions(args.launcher or "sbatch", args.partition, args.gpus_per_run, args.max_parallel,
                         args.time, args.cpus_per_run, entry=main).check()
    if devices:
        raise ConfigError("--devices runs the study on this machine's GPUs; with --launcher / --emit-sbatch "
                          "Slurm gives each run its GPUs (--gpus-per-run)")
    return slurm
