"""Exceptions that carry a message meant for the user.

The command line prints such an error as one sentence and exits non-zero; any
other exception is a bug and keeps its traceback.
"""


class SpikedrivenError(Exception):
    """Base class: the message is complete and addressed to the user."""


class ConfigError(SpikedrivenError, ValueError):
    """An invalid setting (config file, flag, or argument)."""


class DataError(SpikedrivenError):
    """A dataset that is missing or not in the expected format."""


class CheckpointError(SpikedrivenError):
    """A checkpoint that cannot be read or does not fit the model."""


def user_message(error: BaseException) -> str:
    """The sentence of an error meant for the user. One raised in a data-loader worker reaches the
    main process with the worker's traceback in its message; the sentence is its last line."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
