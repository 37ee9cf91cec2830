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
