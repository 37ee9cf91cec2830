"""Fixtures every test gets; shared helpers are in helpers.py."""

import logging
import os

import pytest
import torch

# Every training run draws its curves.png at its end (0.3-0.8 s, matplotlib's import included): hundreds of
# runs here. The suite's runs, in this process and in the processes it starts, draw none; the tests that check
# the figure ask for it with the ``run_curves_drawn`` fixture (tests/test_figures.py draws it directly).
os.environ["SPIKEDRIVEN_RUN_CURVES"] = "0"


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """For a file of small tensors (``pytestmark = pytest.mark.usefixtures("one_thread")``): one thread is as fast
    as two there, and on a busy machine two threads that spin waiting for each other make each test many
    times slower. Restored after the file's tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_curves_drawn(monkeypatch):
    """Training runs in this test draw their curves.png, as they do outside the test suite."""
    monkeypatch.setenv("SPIKEDRIVEN_RUN_CURVES", "1")


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_seen():
    """The warnings and errors of the spikedriven logger, seen by a handler of its own (a run's logging
    set-up may have detached that logger from the root, where caplog listens)."""
    logger, kept = logging.getLogger("spikedriven"), _Kept()
    logger.addHandler(kept)
    yield lambda: list(kept.messages)
    logger.removeHandler(kept)
