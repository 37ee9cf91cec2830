"""Statistics for comparing neuron settings trained over several seeds.

The gaps between neuron settings (a few tenths of a point of top-1) are the
size of the seed-to-seed spread, so a setting is reported against a baseline
setting as a difference with a confidence interval and a p-value:

* ``compare_to_baseline``: paired t-test when both sides ran the same seeds,
  Welch's t-test otherwise, as a ``Comparison``.
* ``mean_std``, ``last_mean``: the summary figures of a setting or a curve.
* ``latex_table``: a booktabs table of such figures for a paper.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
from scipy import stats

from ..errors import ConfigError

# Spreads below this fraction of the values' size are float rounding, not seed noise: differences such as
# 94.1 - 93.9 and 94.4 - 94.2 are not exactly equal in binary, and scipy would turn that 1e-14 "spread" into
# an interval of width 1e-13 and a p-value of 1e-28.
_RELATIVE_SPREAD_TOLERANCE = 1e-9

WITHIN_NOISE = "within noise"
HIGHER = "higher"
LOWER = "lower"
ONE_SEED = "one seed: no interval"
BASELINE_ONE_SEED = "baseline has one seed: no interval"
NO_SPREAD = "no spread between seeds: no interval"
IDENTICAL = "identical"


@dataclass(frozen=True)
class Comparison:
    """A setting against the baseline: difference of means, its confidence interval, and the test used."""

    difference: Optional[float]
    low: Optional[float]
    high: Optional[float]
    p_value: Optional[float]
    test: Optional[str]
    n: int
    n_baseline: int
    verdict: str

    def interval_text(self, digits: int = 2) -> str:
        """``"+0.12 [-0.30, +0.54]"``; ``"-"`` when there is no interval."""
        if self.difference is None or self.low is None or self.high is None:
            return "-"
        return f"{self.difference:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def p_text(self) -> str:
        """``"0.031"``, ``"< 0.001"``, or ``"-"`` when there is no p-value."""
        if self.p_value is None:
            return "-"
        return "< 0.001" if self.p_value < 0.001 else f"{self.p_value:.3f}"


def _finite_values(values: Sequence[float], what: str) -> list[float]:
    numbers_ = [float(v) for v in values]
    if not numbers_:
        raise ConfigError(f"the {what} to compare are empty; give at least one value")
    bad = [v for v in numbers_ if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"the {what} to compare hold {bad[0]}, which is not a finite number")
    return numbers_


def _checked_seeds(seeds: Optional[Sequence[int]], values: list[float], what: str) -> Optional[list]:
    if seeds is None:
        return None
    seeds = list(seeds)
    if len(seeds) != len(values):
        raise ConfigError(f"the {what} have {len(values)} values but {len(seeds)} seeds; give one seed per value")
    return seeds


def _paired(values: list[float], baseline: list[float], seeds: Optional[list],
            baseline_seeds: Optional[list]) -> Optional[tuple[list[float], list[float]]]:
    """Both sides ordered by seed, or None when they cannot be paired (seeds unknown, different or repeated)."""
    if seeds is None or baseline_seeds is None:
        return None
    # A repeated seed has no single partner, so such runs are compared unpaired.
    if len(set(seeds)) != len(seeds) or len(set(baseline_seeds)) != len(baseline_seeds):
        return None
    if set(seeds) != set(baseline_seeds):
        return None
    by_seed = dict(zip(baseline_seeds, baseline))
    order = sorted(range(len(seeds)), key=lambda i: seeds[i])
    return [values[i] for i in order], [by_seed[seeds[i]] for i in order]


def _no_spread(values: Sequence[float], scale: float) -> bool:
    return float(np.std(values, ddof=1)) <= _RELATIVE_SPREAD_TOLERANCE * scale


def compare_to_baseline(values: Sequence[float], baseline: Sequence[float], seeds: Optional[Sequence[int]] = None,
                        baseline_seeds: Optional[Sequence[int]] = None, confidence: float = 0.95) -> Comparison:
    """Compare a setting's per-seed ``values`` with the ``baseline`` setting's.

    Paired t-test on the per-seed differences when both sides give seeds and ran the same set of them (matched
    by seed, not position); Welch's t-test otherwise. The interval is the ``confidence`` interval of
    mean(values) - mean(baseline). With one value on a side, or no spread at all, there is no interval.
    """
    a = _finite_values(values, "values")
    b = _finite_values(baseline, "baseline values")
    if not 0 < confidence < 1:
        raise ConfigError(f"the confidence level {confidence!r} is not between 0 and 1")
    seeds = _checked_seeds(seeds, a, "values")
    baseline_seeds = _checked_seeds(baseline_seeds, b, "baseline values")
    n, n_baseline = len(a), len(b)
    difference = float(np.mean(a) - np.mean(b))

    if n < 2 or n_baseline < 2:
        verdict = ONE_SEED if n < 2 else BASELINE_ONE_SEED
        return Comparison(difference, None, None, None, None, n, n_baseline, verdict)

    scale = max(1.0, max(abs(v) for v in a + b))
    pairs = _paired(a, b, seeds, baseline_seeds)
    if pairs is not None:
        test = f"paired t-test, {n} seeds"
        no_spread = _no_spread([x - y for x, y in zip(*pairs)], scale)
    else:
        test = "Welch's t-test"
        # One side without spread still leaves the other's variance to estimate the error from.
        no_spread = _no_spread(a, scale) and _no_spread(b, scale)

    if not no_spread:
        with warnings.catch_warnings():
            # scipy warns when one side is constant; its variance is then exactly 0, which Welch handles.
            warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
            result = stats.ttest_rel(*pairs) if pairs is not None else stats.ttest_ind(a, b, equal_var=False)
            interval = result.confidence_interval(confidence_level=confidence)
        low, high, p_value = float(interval.low), float(interval.high), float(result.pvalue)
        if all(math.isfinite(x) for x in (low, high, p_value)):
            verdict = WITHIN_NOISE if low <= 0.0 <= high else (HIGHER if low > 0.0 else LOWER)
            return Comparison(difference, low, high, p_value, test, n, n_baseline, verdict)

    if abs(difference) <= _RELATIVE_SPREAD_TOLERANCE * scale:
        return Comparison(0.0, 0.0, 0.0, None, test, n, n_baseline, IDENTICAL)
    return Comparison(difference, difference, difference, None, test, n, n_baseline, NO_SPREAD)


def mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None with a single value)."""
    data = [float(v) for v in values]
    if not data:
        raise ConfigError("there are no values to take the mean of; give at least one value")
    return float(np.mean(data)), (float(np.std(data, ddof=1)) if len(data) > 1 else None)


def last_mean(curve: Sequence[float], n: int = 10) -> tuple[float, int]:
    """Mean of the last ``n`` entries of a per-epoch curve, and how many entries it used (fewer if shorter)."""
    data = [float(v) for v in curve]
    if not data:
        raise ConfigError("the per-epoch curve is empty, so it has no last epochs to average")
    if n < 1:
        raise ConfigError(f"the number of last epochs to average must be at least 1, got {n}")
    tail = data[-n:]
    return float(np.mean(tail)), len(tail)


Cell = Union[str, float, int, None, tuple]

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%",
    "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}", "\n": " ",
}


# ------------------------------------------------------------------ table cells, as every table writes them


def pm_text(mean: float, std: Optional[float], digits: int = 2) -> str:
    """'94.10 ± 0.14', or the mean alone without a spread."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def interval_text(row: dict) -> str:
    """A row's difference to the baseline with its interval: '+0.85 [-1.14, +2.84]'; '-' for none."""
    if row["vs_baseline"] is None:
        return "-"
    if row["vs_baseline_low"] is None or row["vs_baseline_low"] == row["vs_baseline_high"]:
        return f"{row['vs_baseline']:+.2f}"
    return f"{row['vs_baseline']:+.2f} [{row['vs_baseline_low']:+.2f}, {row['vs_baseline_high']:+.2f}]"


def p_text(row: dict) -> str:
    p = row["p_value"]
    return "-" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def last_text(n: int) -> str:
    """'last epoch' or 'last 10 epochs'."""
    return "last epoch" if n == 1 else f"last {n} epochs"


def latex_escape(text: str) -> str:
    """``text`` as LaTeX source that prints it literally."""
    # One pass, so that the backslashes an escape adds are not escaped again.
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _cell_mean(cell: Cell) -> Optional[float]:
    """The number a cell ranks by in ``bold_best``, or None for text and empty cells."""
    value = cell[0] if isinstance(cell, tuple) else cell
    if _is_number(value) and math.isfinite(value):
        return float(value)
    return None


def _format_number(value) -> str:
    return str(int(value)) if isinstance(value, numbers.Integral) else f"{float(value):.2f}"


def _latex_cell(cell: Cell, bold: bool) -> str:
    if isinstance(cell, str):
        return latex_escape(cell)
    if isinstance(cell, tuple):
        if len(cell) != 2:
            raise ValueError(f"a table cell tuple must be (mean, std), got {cell!r}")
        mean, std = cell
    elif cell is None or _is_number(cell):
        mean, std = cell, None
    else:
        raise TypeError(f"a table cell must be str, number, None or (mean, std), got {type(cell).__name__}")
    if mean is None or not math.isfinite(mean):
        return "--"
    body = _format_number(mean)
    if std is not None and math.isfinite(std):
        body += rf" \pm {float(std):.2f}"
    # Numbers go in math mode so that a negative one gets a minus sign, not a hyphen.
    return rf"$\mathbf{{{body}}}$" if bold else f"${body}$"


def latex_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], bold_best: Sequence[int] = (),
                caption: Optional[str] = None, label: Optional[str] = None, groups: Optional[Sequence] = None) -> str:
    """A complete booktabs LaTeX ``table``.

    Cells: str (escaped), float (2 decimals), int, None (``--``) or (mean, std) (``$94.34 \\pm 0.12$``). In each
    column of ``bold_best`` the highest mean, as printed to 2 decimals, is bold, every tied cell included; with
    ``groups`` (a key per row, such as its model), the highest within each group.
    Text columns are ``l``, number columns ``r``. The caption is escaped like a cell; the label is not.
    """
    width = len(headers)
    _check_shape(rows, width, bold_best)
    bold = _bold_cells(rows, width, bold_best, groups)
    lines = [r"% needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering"]
    if caption is not None:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label is not None:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{_column_spec(rows, width)}}}", r"\toprule",
              " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    for i, row in enumerate(rows):
        lines.append(" & ".join(_latex_cell(cell, bold[i][j]) for j, cell in enumerate(row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _check_shape(rows: Sequence[Sequence[Cell]], width: int, bold_best: Sequence[int]) -> None:
    """Every row as wide as the headers, every ``bold_best`` column one of the table's."""
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"table row {i} has {len(row)} cells for {width} headers")
    for column in bold_best:
        if not 0 <= column < width:
            raise ValueError(f"bold_best column {column} is outside the table's {width} columns")


def _bold_cells(rows: Sequence[Sequence[Cell]], width: int, bold_best: Sequence[int],
                groups: Optional[Sequence]) -> list[list[bool]]:
    """Which cells are bold: in each column of ``bold_best``, the highest mean within each group."""
    bold = [[False] * width for _ in rows]
    groups = list(groups) if groups is not None else [None] * len(rows)
    for column in set(bold_best):
        for group in dict.fromkeys(groups):
            members = [i for i in range(len(rows)) if groups[i] == group]
            for i in _best_rows(rows, column, members):
                bold[i][column] = True
    return bold


def _best_rows(rows: Sequence[Sequence[Cell]], column: int, members: Sequence[int]) -> list[int]:
    """The rows among ``members`` whose cell in ``column`` has the highest mean (none when no cell has one)."""
    # Compared as printed: two cells that both read 94.34 are a tie to the reader.
    ranked = [(i, round(m, 2)) for i in members if (m := _cell_mean(rows[i][column])) is not None]
    best = max((m for _, m in ranked), default=None)
    return [i for i, m in ranked if m == best]


def _column_spec(rows: Sequence[Sequence[Cell]], width: int) -> str:
    """``l`` for a column with text (or with nothing but empty cells), ``r`` for a column of numbers."""
    spec = ""
    for column in range(width):
        cells = [row[column] for row in rows]
        text = any(isinstance(c, str) for c in cells)
        spec += "r" if not text and any(c is not None for c in cells) else "l"
    return spec
