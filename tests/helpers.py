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
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_s")} for r in rows]
