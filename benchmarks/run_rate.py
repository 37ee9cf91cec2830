"""The study's command as a user runs it, timed from its own log: what an epoch of a real run takes.

    python benchmarks/run_rate.py                       # 50,000 + 10,000 generated CIFAR images, 2 epochs, the defaults
    python benchmarks/run_rate.py -- --amp bf16 --batch-size 1024   # flags after -- go to the training command
    python benchmarks/run_rate.py --quick               # a small model on a few hundred images, CPU

It writes a CIFAR-10-format set (no download) and runs ``spikedriven train -c conf/cifar10/2_256_300E_t4.yml
--spike-mode if_soft`` on it in a new process, with a schedule of ``--epochs`` epochs (one warm-up epoch, no
cooldown: the schedule's length changes no step's cost). The run's ``log.txt`` stamps each epoch's line to
the millisecond, so the time between two consecutive epoch lines is one whole epoch of the run: the loaders,
the steps, the evaluation, and the logging and checkpoints between epochs, everything
``benchmarks/end_to_end.py`` leaves out. The first epoch (which compiles, on CUDA) is timed from the run's
first line. ``summary.csv``'s ``epoch_seconds`` (training and evaluation) beside the period shows what a run
spends between its epochs.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from spikedriven.testing import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]
STUDY_CONFIG = "conf/cifar10/2_256_300E_t4.yml"  # the study's command: -c STUDY_CONFIG --spike-mode if_soft
QUICK_FLAGS = ["--embed-dim", "32", "--depth", "1", "--time-steps", "2", "--batch-size", "32", "--device", "cpu"]
QUICK_SIZES = dict(train_images=256, test_images=128, epochs=3)
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
EPOCH_LINE = re.compile(STAMP + r" INFO epoch (\d+) \| lr ")  # the epoch's line, not a step's ("epoch 3 | step 10/781")
FIRST_LINE = re.compile(STAMP + r" ")
SIZES_LINE = re.compile(r" INFO run folder .* \| (\d+) train / (\d+) \w+ images \| ")  # the sets as the run read them


def _time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def epoch_times(log_text: str) -> tuple[float | None, dict[int, float]]:
    """The time of the log's first line and of each epoch's line, in seconds."""
    first = FIRST_LINE.match(log_text)
    epochs = {int(m.group(2)): _time(m.group(1)) for m in EPOCH_LINE.finditer(log_text)}
    return (_time(first.group(1)) if first else None), epochs


def summarise(log_text: str, summary_rows: list[dict], train_images: int, eval_images: int) -> dict:
    """Figures of a run from its log and summary.csv: the periods between consecutive epoch lines
    (the first epoch apart), their median, and images/s and 310 epochs at that median."""
    first, stamps = epoch_times(log_text)
    epochs = sorted(stamps)
    periods = [round(stamps[b] - stamps[a], 3) for a, b in zip(epochs, epochs[1:]) if b == a + 1]
    result = {"epochs_logged": len(epochs), "train_images": train_images, "eval_images": eval_images,
              "first_epoch_s": round(stamps[epochs[0]] - first, 3) if epochs and first is not None else None,
              "epoch_periods_s": periods}
    if periods:
        period = statistics.median(periods)
        # training and evaluation as the run timed them, for the same epochs as the periods
        inside = [float(r["epoch_seconds"]) for r in summary_rows if int(r["epoch"]) in epochs[1:]]
        result.update({
            "epoch_s": period,
            "images_per_s": round((train_images + eval_images) / period, 1),
            "train_and_eval_s": round(statistics.median(inside), 3) if inside else None,
            "projected_310_epochs_min": round(310 * period / 60, 1),
        })
    return result


def run(train_images: int, test_images: int, epochs: int, flags: list[str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        write_fake_cifar(tmp, "torch/cifar10", n_train=train_images, n_test=test_images, seed=0)
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "spikedriven", "train", "-c", str(ROOT / STUDY_CONFIG), "--spike-mode", "if_soft",
                   "--data-dir", tmp, "--output", str(out),
                   "--epochs", str(epochs), "--warmup-epochs", "1", "--cooldown-epochs", "0", *flags]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            code, tail = done.returncode, done.stderr[-1500:]
        except subprocess.TimeoutExpired as e:  # what it logged so far still counts
            code, tail = "timeout", (e.stderr or b"")[-1500:].decode(errors="replace")
        wall = time.perf_counter() - started
        log_text = (out / "log.txt").read_text() if (out / "log.txt").is_file() else ""
        summary = out / "summary.csv"
        rows = list(csv.DictReader(summary.read_text().splitlines())) if summary.is_file() else []
        cfg = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").is_file() else {}
        runtime = next((line.split(" INFO ", 1)[1] for line in log_text.splitlines() if " INFO runtime: " in line), "")
    batch = cfg.get("batch_size", 0)
    sizes = SIZES_LINE.search(log_text)
    n_train, n_eval = (int(sizes.group(1)), int(sizes.group(2))) if sizes else (0, 0)
    result = {"command": " ".join(["spikedriven", "train", "-c", STUDY_CONFIG, "--spike-mode", "if_soft", *flags]),
              "exit": code, "wall_s": round(wall, 1), "batch": batch, "amp": cfg.get("amp"), "runtime": runtime,
              # one process: an epoch's whole batches of the training set, all of the evaluation set
              **summarise(log_text, rows, n_train // batch * batch if batch else 0, n_eval)}
    if code != 0:
        result["stderr_tail"] = tail
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-images", type=int, default=50_000)
    p.add_argument("--test-images", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=2, help="epochs of the run; the periods after the first are reported")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before the run is stopped (its log still counts)")
    p.add_argument("--quick", action="store_true", help="a small model on 256 + 128 images, 3 epochs, CPU")
    p.add_argument("--json", type=Path)
    p.add_argument("flags", nargs="*", help="after --: flags for the training command")
    a = p.parse_args(argv)
    flags = list(a.flags)
    if a.quick:
        vars(a).update(QUICK_SIZES)
        flags = QUICK_FLAGS + flags
    result = run(a.train_images, a.test_images, a.epochs, flags, a.timeout)
    for key, value in result.items():
        print(f"{key:<26} {value}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0 if result["exit"] == 0 and result.get("epoch_s") else 1


if __name__ == "__main__":
    sys.exit(main())
