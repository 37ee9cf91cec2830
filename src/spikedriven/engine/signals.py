"""Stopping a run cleanly: SIGINT / SIGTERM set a flag the loop reads at its next safe point."""

from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager
from typing import Optional

log = logging.getLogger("spikedriven")


class StopFlag:
    """Set by SIGINT / SIGTERM; the loop stops after the current step (under torchrun within two sync points,
    where the ranks agree) and the run saves."""

    def __init__(self):
        self.signal: Optional[int] = None
        self.owner: Optional[int] = None  # the process that installed the handler

    def __call__(self) -> bool:
        return self.signal is not None

    @contextmanager
    def installed(self):
        self.owner = os.getpid()
        if threading_is_main():
            previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        else:
            previous = {}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum, frame):
        if os.getpid() != self.owner:
            # A loader worker forked from the run inherits this handler; Ctrl-C reaches the whole
            # process group, and the run's own process decides when to stop and shuts its workers down.
            return
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum
        log.warning("%s received: saving a resumable checkpoint at the next safe point", signal.Signals(signum).name)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class RunStopped(Exception):
    """Training stopped on a signal after saving; carries the exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
