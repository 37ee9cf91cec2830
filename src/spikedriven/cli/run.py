"""The subcommands of one run: train, eval (the study's train.py and firing_num.py) and export."""

from __future__ import annotations

import logging
import os

from .common import _common, _energy_flags, energy_choice


def _add_train(sub) -> None:
    from ..config import add_config_flags

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
    from ..config import overrides_from_args, resolve_settings
    from ..errors import ConfigError
    from ..engine.resume import plan_resume, resolve_config
    from ..engine.trainer import train

    overrides = overrides_from_args(args)
    if args.experiment:
        overrides["experiment"] = args.experiment
    if args.local_rank is not None:  # torch.distributed.launch gives it as a flag and sets LOCAL_RANK too
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    # the file read once (the entry point has read it already, for its plugins) and the config validated once
    settings = resolve_settings(args.config, overrides, values=getattr(args, "config_values", None))
    plan = plan_resume(args.resume, args.no_resume_opt, settings.config.output)
    if args.overwrite and plan.full:
        raise ConfigError("--overwrite starts a new run and --resume continues one; give one of them "
                          "(or --no-resume-opt to start a new run from the checkpoint's weights)")
    cfg = resolve_config(settings.config, settings.requested, plan, settings.sources)
    train(cfg, plan, command_hint=argv_hint, overwrite=args.overwrite)
    return 0


def _add_eval(sub) -> None:
    from ..config import add_config_flags

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


def _run_eval(args, argv_hint: str) -> int:
    from ..config import overrides_from_args
    from ..errors import ConfigError
    from ..analysis.evaluation import evaluate_checkpoint, pick_checkpoint, print_report

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
    from ..export import export_run, load_lines

    written = export_run(args.run, args.output, overwrite=args.overwrite)
    print(f"exported {args.run} to {args.output}: " + ", ".join(p.name for p in written))
    print("load it with timm:")
    print("\n".join("    " + line for line in load_lines(args.output)))
    return 0
