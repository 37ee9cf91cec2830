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
from typing import Callable, Optional

from .. import __version__
from ..errors import SpikedrivenError, user_message
from . import run, runs, study, tools


class _Parser(argparse.ArgumentParser):
    """No silent prefix matching: ``--epoch 2`` is not ``--epochs`` (subcommands are built from this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


# Config flags a subcommand leaves out because it sets them itself: what to give instead (the nearest spelling,
# --rpe-mode for --spike-mode, would mislead).
SET_ELSEWHERE = {"study": {
    "--spike-mode": "the study sets each run's neuron: give the spike modes to compare with --modes (e.g. --modes "
                    "lif,if_soft), not --spike-mode",
    "--v-threshold": "the study sets each run's threshold: give them with --thresholds (and --lif-thresholds for "
                     "leaky neurons), not --v-threshold",
    "--output": "the study names each run's folder: give the study's folder with --study-dir, not --output",
}}


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


def _config_value(argv: list, flags: tuple) -> Optional[str]:
    """The value of the last of ``flags`` on the command line, read before the parser exists."""
    found = None
    for i, word in enumerate(argv):
        name, eq, value = word.partition("=")
        if name in flags:
            found = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return found


def _read_config(path: Optional[str]) -> Optional[dict]:
    """A config file as read, or None where there is none or it cannot be read: reading it for real reports
    that later, in its own words."""
    from ..config import load_yaml

    if not path:
        return None
    try:
        return load_yaml(path)
    except SpikedrivenError:
        return None


def _in_our_spelling(values: Optional[dict]) -> dict:
    from ..config.original_keys import normalised

    return {normalised(key): value for key, value in (values or {}).items()}


class _ConfigFile:
    """The config file (-c) of the command line, read once, before the parser is built: its plugins are
    loaded then, and the command reads its settings from what was read (``values``)."""

    def __init__(self, argv: list):
        self.path = _config_value(argv, ("-c", "--config"))
        self.values = _read_config(self.path)

    def keys(self) -> dict:
        """The file's keys in our spelling (nothing where it cannot be read)."""
        return _in_our_spelling(self.values)

    def plugins(self) -> list:
        """The file's ``plugins``, loaded before the parser is built as --plugins are, so that the settings of
        a neuron the file both loads and names are flags too."""
        plugins = self.keys().get("plugins") or []
        return [plugins] if isinstance(plugins, str) else [str(p) for p in plugins] if isinstance(plugins, list) else []

    def of(self, args) -> Optional[dict]:
        """The command's own config file (-c) as read: this one, or the one the parser found where that is
        another (``-cFILE``); None where there is none or it cannot be read."""
        given = getattr(args, "config", None)
        return self.values if given == self.path else _read_config(given)


def _unregistered_modes(args, config: _ConfigFile) -> list:
    """The spike modes the command names (--spike-mode, else its config file's spike_mode; a study's --modes)
    that no registered neuron answers to."""
    from ..neurons import NEURONS

    named = []
    if getattr(args, "cfg_spike_mode", None) is not None:
        named.append(args.cfg_spike_mode)
    elif args.command in ("train", "eval", "info"):  # a study's runs take --modes, whatever the file says
        named.append(_in_our_spelling(config.of(args)).get("spike_mode"))
    if args.command == "study" and isinstance(getattr(args, "modes", None), str):
        named += [mode.strip() for mode in args.modes.split(",")]
    return [str(mode) for mode in named if mode not in (None, "") and str(mode) not in NEURONS]


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

        config = _ConfigFile(argv)
        load_plugins(_plugins_in(argv) or config.plugins())
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # a neuron's settings are flags only once the neuron is registered: an unknown neuron named beside
            # an unknown flag is the cause to report (a forgotten --plugins), not the flag's nearest spelling
            unregistered = _unregistered_modes(args, config)
            if unregistered:
                from ..errors import ConfigError
                from ..neurons.registry import unknown_neuron_message

                flags = [word.split("=")[0] for word in unknown if word.startswith("--")]
                raise ConfigError(unknown_neuron_message(unregistered[0], flags))
            elsewhere = next((SET_ELSEWHERE[args.command][w.split("=")[0]] for w in unknown
                              if w.split("=")[0] in SET_ELSEWHERE.get(args.command, {})), None)
            if elsewhere:
                from ..errors import ConfigError

                raise ConfigError(elsewhere)
            sub = _subparser(parser, args.command)  # the subcommand's usage, not the top level's, and a suggestion
            sub.error(unknown_flags_message(sub, unknown))
        args.command_line = shlex.join(["spikedriven", *argv])  # the whole command, for messages that repeat it
        args.config_values = config.of(args)  # the config file as read above, not read again
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
