"""Shared test helpers: tiny run arguments and file readers."""

import csv
from pathlib import Path

TINY_RUN = [
    "--dim", "32", "--layer", "1", "--time-steps", "2", "--epochs", "2", "--warmup-epochs", "1",
    "--cooldown-epochs", "0", "--batch-size", "8", "--val-batch-size", "16", "--workers", "0",
    "--device", "cpu", "--log-interval", "2",
]


def read_summary(run_dir: Path) -> list[dict]:
    with open(Path(run_dir) / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def deterministic_columns(rows: list[dict]) -> list[dict]:
    """Summary rows without the wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in ("train_seconds", "epoch_seconds", "images_per_s")} for r in rows]


def assert_same_run(a, b) -> None:
    """Two run folders hold the same run: summary rows (but wall-clock) and final weights bit for bit."""
    import torch

    from spikedriven.checkpoint import read_checkpoint

    assert deterministic_columns(read_summary(a)) == deterministic_columns(read_summary(b))
    sa, sb = (read_checkpoint(Path(r) / "last.pth.tar")["state_dict"] for r in (a, b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def stop_after_steps(monkeypatch, steps: int) -> dict:
    """Make the run's stop flag read as set once ``steps`` training steps have run (as if Ctrl-C came then);
    a single process acts on it after that step."""
    from spikedriven import engine, training

    calls = {"n": 0}
    original = engine.classification_loss

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "classification_loss", counting)
    monkeypatch.setattr(training.StopFlag, "__call__", lambda self: calls["n"] >= steps)
    return calls
