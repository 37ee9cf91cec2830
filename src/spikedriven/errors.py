"""Exceptions that carry a message meant for the user.

The command line prints such an error as one sentence and exits non-zero; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping, Optional


class SpikedrivenError(Exception):
    """Base class: the message is complete and addressed to the user."""


class ConfigError(SpikedrivenError, ValueError):
    """An invalid setting (config file, flag, or argument)."""


class DataError(SpikedrivenError):
    """A dataset that is missing or not in the expected format."""


class CheckpointError(SpikedrivenError):
    """A checkpoint that cannot be read or does not fit the model."""


def did_you_mean(name: object, choices: Iterable[str], spellings: Optional[Mapping[str, str]] = None) -> str:
    """`` (did you mean 'lif'?)`` where one of ``choices`` is close to ``name``, else ''. Case is ignored:
    LIF is a typo of lif as much as lfi is. ``spellings``: other words for a choice (digits for
    sklearn/digits), compared too, the choice suggested."""
    lowered = {word.lower(): choice for word, choice in (spellings or {}).items()}
    lowered.update({choice.lower(): choice for choice in choices})
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


def unknown_choice(kind: str, name: object, choices: Iterable[str], listed: Optional[str] = None) -> str:
    """The one wording of a name that is not among the registered ones, for every registry:
    ``unknown spike mode 'lfi' (did you mean 'lif'?); the registered neurons are if, lif, ...``.
    ``listed`` names what the choices are (default: the kind, plural)."""
    choices = list(choices)
    return (f"unknown {kind} {str(name)!r}{did_you_mean(name, choices)}; "
            f"the registered {listed or kind + 's'} are {', '.join(choices)}")


def user_message(error: BaseException) -> str:
    """The sentence of an error meant for the user. One raised in a data-loader worker reaches the
    main process with the worker's traceback in its message; the sentence is its last line."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
