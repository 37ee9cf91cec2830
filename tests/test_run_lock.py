"""One process per run folder: a second is refused naming the holder; a dead holder's lock is taken over."""

import json
import os
import subprocess
import sys

import pytest

from spikedriven.cli import main
from spikedriven.errors import ConfigError
from spikedriven.engine.run_lock import LOCK_NAME, RunLock

from helpers import DEMO, SMALL


HOLD = """
import sys, time
from spikedriven.engine.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = _holder(run)
    try:
        with pytest.raises(ConfigError, match=rf"in use by another process \(host .*, pid {holder.pid}, since "):
            RunLock(run).acquire()
        code = main(["train", "-c", DEMO, *SMALL, "--output", str(run)])
        err = capsys.readouterr().err
        assert code == 2 and f"pid {holder.pid}" in err and "Traceback" not in err
        assert not (run / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = _holder(run)
    holder.kill()  # killed: no clean-up ran, the lock file stays
    holder.wait()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == holder.pid
    with RunLock(run):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    RunLock(run).acquire().release()  # released: free again


def test_a_run_holds_its_lock_while_training_and_frees_it_after(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "-c", DEMO, *SMALL, "--output", str(run)]) == 0
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    RunLock(run).acquire().release()  # the finished run let go of it
