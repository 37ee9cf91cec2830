"""Interrupted runs lose nothing: SIGKILL at random moments (also mid-checkpoint-write) and SIGTERM."""

import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spikedriven.testing import write_fake_cifar

from helpers import TINY_RUN, assert_same_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_cmd(data, out, *extra):
    return [sys.executable, "-m", "spikedriven", "train", "-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"),
            "--data-dir", str(data), *TINY_RUN, "--epochs", "4", "--batch-size", "4", "--output", str(out), *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    data = write_fake_cifar(base / "data", n_train=80, n_test=12, seed=3)
    out = base / "reference"
    started = time.monotonic()
    proc = subprocess.run(train_cmd(data, out), capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return data, out, time.monotonic() - started


def _kill_during_checkpoint_write(proc, run_dir, deadline):
    """Poll for the temporary file of an atomic save and kill the moment one shows up."""
    while time.monotonic() < deadline and proc.poll() is None:
        if run_dir.is_dir() and any(p.name.endswith(".tmp") for p in os.scandir(run_dir)):
            proc.send_signal(signal.SIGKILL)
            return True
    return False


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(reference, tmp_path):
    data, ref, duration = reference
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills, kills_mid_write, attempts = 0, 0, 0
    while True:
        attempts += 1
        assert attempts < 40, "the run never finished"
        proc = subprocess.Popen(train_cmd(data, out, "--resume", "auto"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=ENV)
        if kills < 6:
            if kills % 2 == 1:
                hit = _kill_during_checkpoint_write(proc, out, time.monotonic() + 30)
                kills_mid_write += hit
            else:
                time.sleep(rng.uniform(0.3, 0.9) * duration)  # anywhere from start-up to the last epoch
                proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0 and kills < 3:
            # it finished before the kill (the reference's time included a cold start): begin again, killing sooner
            shutil.rmtree(out, ignore_errors=True)
            duration /= 2
            continue
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
    print(f"\nsurvived {kills} SIGKILLs ({kills_mid_write} while a checkpoint was being written)")
    assert kills >= 3
    assert_same_run(ref, out)


@pytest.mark.slow
def test_sigterm_saves_and_prints_a_working_resume_command(reference, tmp_path):
    data, ref, _ = reference
    out = tmp_path / "terminated"
    proc = subprocess.Popen(train_cmd(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    # wait until the first epoch is done, so the stop lands mid-run
    deadline = time.monotonic() + 300
    while not (out / "last.pth.tar").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    match = re.search(r"resume with: (.+)$", err, re.MULTILINE)
    assert match, err
    command = shlex.split(match.group(1))
    assert command[:2] == ["spikedriven", "train"]
    resumed = subprocess.run([sys.executable, "-m", "spikedriven", *command[1:]], capture_output=True, text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(ref, out)


def _nan_on_call(monkeypatch, bad_call):
    from spikedriven.engine import loop

    original = loop.classification_loss
    calls = {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if calls["n"] == bad_call else value

    monkeypatch.setattr(loop, "classification_loss", loss)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from spikedriven.engine import checkpoint as ckpt_io
    from spikedriven.cli import main

    from helpers import read_summary

    data = write_fake_cifar(tmp_path / "data", n_train=40, n_test=12, seed=3)
    out = tmp_path / "nan"
    _nan_on_call(monkeypatch, 10 + 4)  # 10 steps an epoch: the 4th step (index 3) of epoch 1
    code = main(["train", "-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(data), *TINY_RUN,
                 "--batch-size", "4", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "non-finite at epoch 1, step 3" in err and "--lr" in err and "--amp" in err and "--nonfinite skip" in err
    assert ckpt_io.read_checkpoint(out / "last.pth.tar")["epoch"] == 1  # the good one from epoch 0
    assert [r["epoch"] for r in read_summary(out)] == ["0"]


def test_nonfinite_steps_can_be_skipped(tmp_path, monkeypatch):
    from spikedriven.cli import main

    from helpers import read_summary

    data = write_fake_cifar(tmp_path / "data", n_train=40, n_test=12, seed=3)
    out = tmp_path / "skip"
    _nan_on_call(monkeypatch, 5)
    assert main(["train", "-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(data), *TINY_RUN,
                 "--batch-size", "4", "--nonfinite", "skip", "--output", str(out)]) == 0
    assert "skipped 1 non-finite steps" in (out / "log.txt").read_text()
    assert len(read_summary(out)) == 2


def test_atomic_write_leaves_the_old_file_whole_when_interrupted(tmp_path):
    from spikedriven.atomic import atomic_write, write_text_atomic

    target = tmp_path / "results.json"
    write_text_atomic(target, '{"top1": 90}')
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write('{"top1": 9')  # half of the new content, then the interrupt
            raise KeyboardInterrupt
    assert target.read_text() == '{"top1": 90}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind
    write_text_atomic(target, '{"top1": 91}')
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == '{"top1": 91}' and target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError, match="whole files"):
        with atomic_write(target, "a"):
            pass


def test_loader_workers_leave_the_stop_to_the_run():
    """Ctrl-C reaches forked loader workers too: they neither log nor stop; the run's process does."""
    import multiprocessing

    from spikedriven.engine.signals import StopFlag

    flag = StopFlag()

    def worker():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C would stop the run's process at once
        time.sleep(0.1)
        os._exit(0 if flag.signal is None else 3)

    with flag.installed():
        child = multiprocessing.get_context("fork").Process(target=worker)
        child.start()
        child.join(30)
    assert child.exitcode == 0 and flag.signal is None
