"""The ``spikedriven`` command line: one entry point, one subcommand per task.

Errors meant for the user (``SpikedrivenError``) print one sentence and exit
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from . import __version__
from .errors import SpikedrivenError


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
    _common(p)
    add_config_flags(p)
    p.set_defaults(func=_run_train)


def _run_train(args, argv_hint: str) -> int:
    from .config import load_config, overrides_from_args
    from .training import plan_resume, resolve_config, train

    overrides = overrides_from_args(args)
    cfg = load_config(args.config, overrides)
    plan = plan_resume(args.resume, args.no_resume_opt, cfg.output)
    cfg = resolve_config(cfg, overrides, plan)
    train(cfg, plan, command_hint=argv_hint)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikedriven", description="Train, evaluate and study Spike-driven Transformers with LIF / IF neurons."
    )
    parser.add_argument("--version", action="version", version=f"spikedriven {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


SUBCOMMANDS: list[Callable] = [_add_train]


def main(argv=None, prog_hint: str = "spikedriven") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    hint = f"{prog_hint} {args.command}" if prog_hint == "spikedriven" else prog_hint
    try:
        return args.func(args, hint)
    except SpikedrivenError as e:
        if args.debug:
            raise
        logging.getLogger("spikedriven").debug("error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _run_stopped() as e:
        print(str(e), file=sys.stderr)
        return e.code


def _run_stopped():
    from .training import RunStopped

    return RunStopped


if __name__ == "__main__":
    sys.exit(main())
