"""The offline demo really learns: real data (scikit-learn's digits), each neuron model >= 97 % test top-1 in the
demo's recipe shortened to 6 of its 15 epochs (each reaches 98-98.6 % there; the whole demo, 98-99 %, costs the
suite twice the time; 5 epochs leave IF soft-reset at 97.8 %, 4 epochs at 95.8 %: too close).

The three runs train at once, each in a process of its own with one thread: the demo's small model gains little
from a second thread, so on CI's two cores the three together take about half of what three in turn take."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODES = ["lif", "if", "if_soft"]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """``spikedriven train -c conf/digits/demo.yml --spike-mode MODE --epochs 6`` for each mode, all at once:
    each mode's exit code, its stderr and its run folder."""
    base = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = {}
    for mode in MODES:
        err = open(base / f"{mode}.err", "w+")  # a file, not a pipe: no run waits on a full pipe meanwhile
        cmd = [sys.executable, "-m", "spikedriven", "train", "-c", str(ROOT / "conf/digits/demo.yml"), "--spike-mode",
               mode, "--epochs", "6", "--output", str(base / mode)]
        started[mode] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env), err
    runs = {}
    try:
        for mode, (proc, err) in started.items():
            code = proc.wait(timeout=1200)
            err.seek(0)
            runs[mode] = code, err.read(), base / mode
    finally:
        for proc, err in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_digits_demo_reaches_97_percent(mode, demo_runs):
    code, err, out = demo_runs[mode]
    assert code == 0, err[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["spike_mode"] == mode and results["final_epoch"] == 5, results  # this mode's 6 epochs
    assert results["final_top1"] >= 97.0, results  # the last epoch, not the best one
