"""A run's per-epoch test accuracy from its summary files, joined over the segments of a resumed run.

timm's ``summary.csv`` (``epoch, ..., eval_top1, eval_top5``) as the original code and this toolkit write
it, with any line endings (``\\r\\r\\n``, a blank line after every row). A run can come in segments:

* inside one file: every start of timm's ``train.py`` writes the header again, so a repeated header starts
  a new segment, trained after the rows above it;
* ``summary.csv``, ``summary1.csv``, ``summary2.csv``, ... in one folder, or several folders given as one
  run: each file is a segment. Files carry no date, so segments are put in order by the epoch they start
  at; two that start at the same epoch cannot be ordered, and are refused.

Joining: an epoch present in two segments was trained twice, and the later segment's row counts; the rows
after it in the earlier segment are dropped as well (the later segment resumed from a checkpoint before
them). Dropped rows are kept apart as ``replaced``: each was a real evaluation, and the original code
saved each segment's best checkpoint, so a run's best is taken over them too (``RunCurve.best``).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError

REQUIRED_COLUMNS = ("epoch", "eval_top1", "eval_top5")
SUMMARY_NAME = re.compile(r"summary(\d*)\.csv")
NO_SUMMARY = "has no summary.csv (nor the summary1.csv, summary2.csv, ... of a resumed run)"


@dataclass(frozen=True)
class Row:
    epoch: int
    top1: float
    top5: float


@dataclass
class Segment:
    """One summary file: the rows its last start left (epochs increasing) and those a restart inside the
    file trained again."""

    path: Path
    rows: list[Row]
    replaced: list[Row] = field(default_factory=list)
    first_epoch: int = 0  # the epoch the file's first start began with

    @property
    def span(self) -> str:
        return f"{self.path.name} {self.rows[0].epoch}-{self.rows[-1].epoch}"


@dataclass
class JoinedCurve:
    rows: list[Row]
    replaced: list[Row]
    segments: list[Segment]


def summary_files(folder: Path) -> list[Path]:
    """``summary.csv`` and ``summaryN.csv`` in ``folder``, by their number (``summary.csv`` first)."""
    found = [(p, SUMMARY_NAME.fullmatch(p.name)) for p in folder.iterdir() if p.is_file()]
    return [p for p, m in sorted(((p, m) for p, m in found if m), key=lambda pm: int(pm[1][1] or -1))]


def _number(text: Optional[str], where: str, column: str, path: Path) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        shown = "nothing" if text in (None, "") else repr(text)
        raise ConfigError(f"{path} has {shown} in {where}, column {column}, where a number is expected")
    return value


def _parse_row(row: dict, where: str, path: Path) -> Row:
    epoch = _number(row.get("epoch"), where, "epoch", path)
    if not epoch.is_integer():
        raise ConfigError(f"{path} has epoch {row['epoch']!r} in {where}, which is not a whole number")
    return Row(int(epoch), _number(row.get("eval_top1"), where, "eval_top1", path),
               _number(row.get("eval_top5"), where, "eval_top5", path))


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)  # skips the empty rows that \r\r\n and blank lines make
            return reader.fieldnames, [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{path} cannot be read as CSV ({error})") from None


def _starts(path: Path) -> list[list[Row]]:
    """The file's rows, split where a repeated header shows that the training started again."""
    header, rows = _read_rows(path)
    if not header:
        raise ConfigError(f"{path} is empty")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    starts: list[list[Row]] = [[]]
    for row_number, (line, row) in enumerate(rows, start=1):
        if [row.get(c) for c in header] == list(header):
            starts.append([])
            continue
        parsed = _parse_row(row, f"row {row_number} (line {line})", path)
        current = starts[-1]
        if current and parsed.epoch <= current[-1].epoch:
            raise ConfigError(f"{path} goes from epoch {current[-1].epoch} back to epoch {parsed.epoch} at line "
                              f"{line} without a new header, so its rows overlap inconsistently")
        current.append(parsed)
    starts = [s for s in starts if s]
    if not starts:
        raise ConfigError(f"{path} has a header but no epochs")
    return starts


def _join(parts: Sequence[Sequence[Row]]) -> tuple[list[Row], list[Row]]:
    """Parts in the order they were trained: the kept rows by epoch, and the rows a later part replaced."""
    kept: dict[int, Row] = {}
    replaced: list[Row] = []
    for part in parts:
        start = part[0].epoch
        replaced += [kept.pop(e) for e in sorted(e for e in kept if e >= start)]
        kept.update((r.epoch, r) for r in part)
    return [kept[e] for e in sorted(kept)], replaced


def read_segment(path: Path) -> Segment:
    starts = _starts(path)
    rows, replaced = _join(starts)
    return Segment(path, rows, replaced, starts[0][0].epoch)


def join_segments(segments: Sequence[Segment]) -> JoinedCurve:
    """The segments in the order they were trained (by the epoch each starts at), joined."""
    ordered = sorted(segments, key=lambda s: s.first_epoch)
    for earlier, later in pairwise(ordered):
        if earlier.first_epoch == later.first_epoch:
            raise ConfigError(f"{earlier.path} and {later.path} both start at epoch {later.first_epoch}, so which "
                              "segment was trained later (and counts where both have an epoch) cannot be decided")
    rows, replaced = _join([s.rows for s in ordered])
    replaced += [r for s in ordered for r in s.replaced]
    return JoinedCurve(rows, sorted(replaced, key=lambda r: r.epoch), ordered)


def read_curve(folders: Sequence[Path]) -> JoinedCurve:
    """Every summary file of ``folders``, one run's segments, joined; a folder without one is refused."""
    segments = []
    for folder in folders:
        files = summary_files(folder)
        if not files:
            raise ConfigError(f"run folder {folder} {NO_SUMMARY}")
        segments += [read_segment(p) for p in files]
    return join_segments(segments)


def missing_epochs(epochs: Sequence[int]) -> list[tuple[int, int]]:
    """The stretches of epochs from 0 to the last one that no segment holds, as (first, last)."""
    gaps, expected = [], 0
    for epoch in epochs:
        if epoch > expected:
            gaps.append((expected, epoch - 1))
        expected = epoch + 1
    return gaps
