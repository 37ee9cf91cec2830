"""Checkpoints that reach the disk on a background thread while the next epoch trains.

Every epoch ends by writing ``last.pth.tar`` (and ``best.pth.tar`` when it improved): for the study's
model with its AdamW state that is 29.5 MiB a file, and serialising plus fsync kept the training loop
waiting about 90 ms for the two on the development machine (``benchmarks/checkpoint_save.py``), every epoch.
``CheckpointWriter.save`` takes a host copy of every tensor of the payload at once, so the steps that
follow cannot change what gets written, and a single thread writes the files in the order given, each
atomically (``save_checkpoint``): a kill at any moment leaves every file whole, old or new.
"""

from __future__ import annotations

import copy
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import torch

from ..errors import CheckpointError
from . import checkpoint

log = logging.getLogger("spikedriven")

__all__ = ["CheckpointWriter", "host_copy"]


def host_copy(value: Any) -> Any:
    """``value`` with every tensor in it copied to host memory; containers are rebuilt, keeping their
    type and attributes (a state dict's ``_metadata``), other values are shared."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        out = copy.copy(value)
        for key, item in value.items():
            out[key] = host_copy(item)
        return out
    if type(value) in (list, tuple):  # not their subclasses (a named tuple is built otherwise)
        return type(value)(host_copy(item) for item in value)
    return value


def _write(payload: dict, paths: tuple) -> None:
    for path in paths:
        try:
            checkpoint.save_checkpoint(path, payload)  # looked up per call: tests stand in for it
        except OSError as e:
            raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from e


class CheckpointWriter:
    """Writes checkpoints on one background thread, in the order they were saved.

    At most one payload is held at a time: ``save`` first waits for the previous one (which also
    raises its failure, if it failed), so memory holds one host copy of the model and optimiser
    at most. Used as a context manager, leaving waits for the last write; a failed write then
    raises, unless an exception is already on its way out, which it would hide: it is logged.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spikedriven-checkpoint")
        self._pending: Optional[Future] = None

    def save(self, payload: dict, *paths) -> None:
        """Write ``payload`` to each of ``paths`` in turn, after the previous save's files."""
        self.wait()
        self._pending = self._pool.submit(_write, host_copy(payload), paths)

    def wait(self) -> None:
        """Return once every saved file is on disk; raise the failure of a write that failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.wait()
        except Exception as failure:  # a Ctrl-C while waiting is not a failed write: it goes on as it is
            if exc_type is None:
                raise
            log.error("a checkpoint write failed as the run stopped: %s", failure)
        finally:
            self._pool.shutdown(wait=True)
