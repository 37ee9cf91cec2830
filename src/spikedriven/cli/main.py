"""The entry point: the parser of every subcommand, and what an error or a Ctrl-C prints (one sentence,
exit status 2, for an error meant for the user; its traceback with --debug)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import signal
import sys
import traceback
from typing import Callable

from .. import __version__
from ..errors import SpikedrivenError, user_message
from . import run, runs, study, tools


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


SUBCOMMANDS: list[Callable] = [run._add_train, run._add_eval, study._add_compare, runs._add_runs_table, study._add_study,
                               tools._add_neurons, tools._add_encodings, tools._add_models, run._add_export,
                               tools._add_info, tools._add_completion]


def _plugins_in(argv: list) -> list:
    """The values of ``--plugins`` on the command line, loaded before the parser is built so that
    their neurons' and models' settings get flags of their own."""
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
        from ..plugins import load_plugins

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
    from ..engine.signals import RunStopped

    return RunStopped


if __name__ == "__main__":
    sys.exit(main())
