"""Training runs read the same way, whether this toolkit or the original code trained them.

* ours: ``summary.csv`` (``run_folder.SUMMARY_FIELDS``) and ``config.yaml``;
* the original code (timm's ``train.py``): ``summary.csv`` with at least
  ``epoch, eval_top1, eval_top5`` and ``args.yaml``, its argparse arguments.
  Its thresholds were hard-coded, so ``v_threshold`` is usually not recorded.

``read_run`` turns either into a ``RunCurve``; ``runs_table`` and
``runs_markdown`` put several side by side.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import yaml

from ..errors import ConfigError
from . import statistics

OURS, ORIGINAL = "spikedriven", "original code"
CONFIG_FILES = {"config.yaml": OURS, "args.yaml": ORIGINAL}  # in order of preference
REQUIRED_COLUMNS = ("epoch", "eval_top1", "eval_top5")
LAST_N = 10


@dataclass
class RunCurve:
    """One training run: its per-epoch test accuracy and the settings it was trained with."""

    folder: Path
    source: str
    epochs: list[int]
    eval_top1: list[float]
    eval_top5: list[float]
    mode: Optional[str]
    v_threshold: Optional[float]
    threshold_recorded: bool
    seed: Optional[int]
    dataset: Optional[str]
    label: str = ""
    model: Optional[str] = None

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.label:
            self.label = self.folder.name
        if not self.eval_top1 or len(self.epochs) != len(self.eval_top1):
            raise ConfigError(f"the run in {self.folder} needs one top-1 value per epoch and at least one epoch")

    @property
    def best(self) -> tuple[float, int]:
        """Highest top-1 and the epoch it was reached in (the first such epoch on ties)."""
        i = max(range(len(self.eval_top1)), key=lambda k: (self.eval_top1[k], -k))
        return self.eval_top1[i], self.epochs[i]

    @property
    def final(self) -> float:
        """Top-1 of the last epoch."""
        return self.eval_top1[-1]

    def last_mean(self, n: int = LAST_N) -> float:
        """Mean top-1 over the last ``n`` epochs (all of them if fewer)."""
        return statistics.last_mean(self.eval_top1, n)[0]

    def figures(self) -> dict:
        """best_top1, best_epoch, final_top1, last10_top1 and epochs (how many were trained)."""
        best_top1, best_epoch = self.best
        return {"best_top1": best_top1, "best_epoch": best_epoch, "final_top1": self.final,
                "last10_top1": self.last_mean(LAST_N), "epochs": len(self.epochs)}


def is_run_folder(path: Union[str, Path]) -> bool:
    """Whether ``path`` holds a run: a ``summary.csv`` and a ``config.yaml`` or ``args.yaml``."""
    path = Path(path)
    return (path / "summary.csv").is_file() and any((path / name).is_file() for name in CONFIG_FILES)


def _read_settings(path: Path) -> dict:
    try:
        settings = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path} holds {type(settings).__name__}, not a mapping of settings")
    return settings


def _setting(settings: dict, key: str, kind: type, path: Path):
    value = settings.get(key)
    if value is None:
        return None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    names = {float: "a number", int: "an integer", str: "a string"}
    raise ConfigError(f"{path} sets {key} to {value!r}, which is not {names[kind]}")


def _number(text: Optional[str], where: str, column: str, path: Path) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        shown = "nothing" if text in (None, "") else repr(text)
        raise ConfigError(f"{path} has {shown} in {where}, column {column}, where a number is expected")
    return value


def _read_summary(path: Path) -> tuple[list[int], list[float], list[float]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{path} cannot be read as CSV ({error})") from None
    if not header:
        raise ConfigError(f"{path} is empty")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")

    by_epoch: dict[int, tuple[float, float]] = {}
    for row_number, (line, row) in enumerate(rows, start=1):
        where = f"row {row_number} (line {line})"
        # timm writes the header again each time a run is resumed.
        if [row.get(c) for c in header] == list(header):
            continue
        epoch = _number(row.get("epoch"), where, "epoch", path)
        if not epoch.is_integer():
            raise ConfigError(f"{path} has epoch {row['epoch']!r} in {where}, which is not a whole number")
        epoch = int(epoch)
        top1 = _number(row.get("eval_top1"), where, "eval_top1", path)
        top5 = _number(row.get("eval_top5"), where, "eval_top5", path)
        # A run resumed from an earlier checkpoint trains those epochs again: the later rows replace the
        # abandoned ones, and so do rows after them.
        for later in [e for e in by_epoch if e >= epoch]:
            del by_epoch[later]
        by_epoch[epoch] = (top1, top5)
    if not by_epoch:
        raise ConfigError(f"{path} has a header but no epochs")
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e][0] for e in epochs], [by_epoch[e][1] for e in epochs]


def read_run(folder: Union[str, Path], label: Optional[str] = None) -> RunCurve:
    """Read the run in ``folder``, ours (``config.yaml``) or the original code's (``args.yaml``)."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"run folder {folder} {problem}")
    summary = folder / "summary.csv"
    if not summary.is_file():
        raise ConfigError(f"run folder {folder} has no summary.csv")
    found = [(folder / name, source) for name, source in CONFIG_FILES.items() if (folder / name).is_file()]
    if not found:
        raise ConfigError(f"run folder {folder} has neither config.yaml (this toolkit) nor args.yaml "
                          "(the original code)")
    settings_path, source = found[0]
    settings = _read_settings(settings_path)
    epochs, top1, top5 = _read_summary(summary)

    # Our config records every setting, so a missing threshold means the neuron has none; the original code's
    # thresholds were constants in its source, so there a missing one is simply unknown.
    threshold_recorded = source == OURS or settings.get("v_threshold") is not None
    return RunCurve(folder=folder, source=source, epochs=epochs, eval_top1=top1, eval_top5=top5,
                    mode=_setting(settings, "spike_mode", str, settings_path),
                    v_threshold=_setting(settings, "v_threshold", float, settings_path),
                    threshold_recorded=threshold_recorded,
                    seed=_setting(settings, "seed", int, settings_path),
                    dataset=_setting(settings, "dataset", str, settings_path),
                    # our config.yaml of an earlier version names no model: it could only train sdt
                    model=_setting(settings, "model", str, settings_path) or ("sdt" if source == OURS else None),
                    label=label or folder.name)


HEADERS = ("run", "source", "model", "mode", "u_th", "epochs", "best top-1 (epoch)", "final top-1",
           f"mean of last {LAST_N}")
RIGHT_ALIGNED = (False, False, False, False, False, True, True, True, True)


def _threshold_text(run: RunCurve) -> str:
    if not run.threshold_recorded:
        return "not recorded"
    return "-" if run.v_threshold is None else f"{run.v_threshold:g}"


def _row(run: RunCurve) -> list[str]:
    best_top1, best_epoch = run.best
    used = min(LAST_N, len(run.eval_top1))
    last = f"{run.last_mean(LAST_N):.2f}" + ("" if used == LAST_N else f" (last {used})")
    return [run.label, run.source, run.model or "-", run.mode or "-", _threshold_text(run), str(len(run.epochs)),
            f"{best_top1:.2f} ({best_epoch})", f"{run.final:.2f}", last]


def runs_table(runs: Sequence[RunCurve]) -> str:
    """The runs as an aligned plain-text table, numbers right-aligned."""
    rows = [list(HEADERS)] + [_row(run) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w)
                         for c, w, right in zip(cells, widths, RIGHT_ALIGNED)).rstrip()

    return "\n".join([line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]]) + "\n"


def runs_markdown(runs: Sequence[RunCurve]) -> str:
    """The runs as a Markdown table, numbers right-aligned."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if right else "---" for right in RIGHT_ALIGNED) + "|"
    return "\n".join([line(HEADERS), rule] + [line(_row(run)) for run in runs]) + "\n"
