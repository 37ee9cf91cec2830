"""Training runs read the same way, whether this toolkit or the original code trained them.

* ours: ``summary.csv`` (``run_folder.SUMMARY_FIELDS``) and ``config.yaml``;
* the original code (timm's ``train.py``), as its folders were published: ``summary.csv`` (or the
  ``summary1.csv``, ``summary2.csv``, ... of a resumed run: ``run_segments``) alone, or beside ``args.yaml``
  (its argparse arguments) and/or its training log ``*.log`` (``published_logs``). Settings come from
  whichever is there, ``args.yaml`` first. Its thresholds were hard-coded, so ``v_threshold`` is usually not
  recorded; a label gives it (``run_labels``).

``read_run`` turns any of these, or several folders as one run, into a ``RunCurve``; ``runs_table`` and
``runs_markdown`` put several side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import yaml

from ..errors import ConfigError
from . import statistics
from .published_logs import TrainingLog, read_logs
from .run_labels import NeuronLabel
from .run_segments import NO_SUMMARY, Row, Segment, missing_epochs, read_curve, summary_files

OURS, ORIGINAL = "spikedriven", "original code"
CONFIG_FILES = {"config.yaml": OURS, "args.yaml": ORIGINAL}  # in order of preference
LAST_N = 10
_KEYS = {"spike_mode": str, "v_threshold": float, "seed": int, "dataset": str, "model": str}


@dataclass
class RunCurve:
    """One training run: its per-epoch test accuracy and the settings it was trained with.

    ``replaced``: rows evaluated and then trained again by a later segment of a resumed run; ``from_label``
    names the settings ("mode", "v_threshold") that a label gave rather than the run's files."""

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
    replaced: list[Row] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    log: Optional[TrainingLog] = None
    from_label: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folders = [Path(f) for f in self.folders] or [self.folder]
        if not self.label:
            self.label = self.folder.name
        if not self.eval_top1 or len(self.epochs) != len(self.eval_top1):
            raise ConfigError(f"the run in {self.folder} needs one top-1 value per epoch and at least one epoch")

    def _best_row(self, rows: Sequence[tuple[float, bool, int]]) -> tuple[float, int, bool]:
        top1, kept, epoch = max(rows, key=lambda r: (r[0], r[1], -r[2]))
        return top1, epoch, not kept

    @property
    def best(self) -> tuple[float, int]:
        """Highest top-1 over every row any segment evaluated, and its epoch: each segment of a resumed run
        kept its own best checkpoint, so a row a later segment trained again still counts. On ties, a row
        of the joined curve before a replaced one, then the first epoch."""
        return self._best_of_all()[:2]

    def _best_of_all(self) -> tuple[float, int, bool]:
        rows = [(t, True, e) for t, e in zip(self.eval_top1, self.epochs)]
        return self._best_row(rows + [(r.top1, False, r.epoch) for r in self.replaced])

    @property
    def best_replaced(self) -> bool:
        """Whether the best comes from a row that a later segment trained again."""
        return self._best_of_all()[2]

    @property
    def curve_best(self) -> tuple[float, int]:
        """Highest top-1 of the joined curve alone, and its epoch."""
        return self._best_row([(t, True, e) for t, e in zip(self.eval_top1, self.epochs)])[:2]

    @property
    def final(self) -> float:
        """Top-1 of the last epoch."""
        return self.eval_top1[-1]

    @property
    def param_count(self) -> Optional[int]:
        return self.log.param_count if self.log else None

    @property
    def lr(self) -> dict[int, float]:
        """The learning rate per epoch, where a training log gives it."""
        return dict(self.log.lr) if self.log else {}

    def last_mean(self, n: int = LAST_N) -> float:
        """Mean top-1 over the last ``n`` epochs (all of them if fewer)."""
        return statistics.last_mean(self.eval_top1, n)[0]

    def figures(self) -> dict:
        """best_top1, best_epoch, final_top1, last10_top1 and epochs (how many were trained)."""
        best_top1, best_epoch = self.best
        return {"best_top1": best_top1, "best_epoch": best_epoch, "final_top1": self.final,
                "last10_top1": self.last_mean(LAST_N), "epochs": len(self.epochs)}


def is_run_folder(path: Union[str, Path]) -> bool:
    """Whether ``path`` says it holds a run: a summary file beside config.yaml, args.yaml or a training log."""
    path = Path(path)
    if not path.is_dir() or not summary_files(path):
        return False
    return any((path / name).is_file() for name in CONFIG_FILES) or any(path.glob("*.log"))


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


def _recorded(folder: Path) -> tuple[Optional[str], dict]:
    """The source and checked settings of the folder's settings file; (None, {}) without one."""
    for name, source in CONFIG_FILES.items():
        path = folder / name
        if path.is_file():
            settings = _read_settings(path)
            return source, {k: v for k, kind in _KEYS.items() if (v := _setting(settings, k, kind, path)) is not None}
    return None, {}


def _merged_settings(folders: Sequence[Path], log: Optional[TrainingLog]) -> tuple[str, dict]:
    """One run's source and settings over its folders; the settings files win over the log."""
    sources, merged, where = [], {}, {}
    for folder in folders:
        source, found = _recorded(folder)
        sources += [source] if source else []
        for key, value in found.items():
            if merged.get(key, value) != value:
                raise ConfigError(f"{where[key]} and {folder} record different {key} ({merged[key]!r}, {value!r}), "
                                  "so they are not segments of one run")
            merged.setdefault(key, value)
            where.setdefault(key, folder)
    for key, value in (log.settings() if log else {}).items():
        merged.setdefault(key, value)
    return (sources[0] if sources else ORIGINAL), merged


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"run folder {folder} {problem}")
    if not summary_files(folder):
        raise ConfigError(f"run folder {folder} {NO_SUMMARY}")


def _labelled(neuron: Optional[NeuronLabel], settings: dict, recorded: bool, where: Path) -> tuple:
    """(mode, v_threshold, from_label) with the label filling in what the files do not record."""
    mode, threshold = settings.get("spike_mode"), settings.get("v_threshold")
    if neuron is None:
        return mode, threshold, ()
    if mode is not None and mode != neuron.mode:
        raise ConfigError(f"{where} records spike_mode {mode!r}, but its label says {neuron.mode!r}")
    if recorded and threshold != neuron.v_threshold:
        raise ConfigError(f"{where} records v_threshold {threshold}, but its label says {neuron.v_threshold}")
    given = (("mode",) if mode is None else ()) + (() if recorded else ("v_threshold",))
    return neuron.mode, neuron.v_threshold, given


def read_run(folders: Union[str, Path, Sequence[Union[str, Path]]], label: Optional[str] = None,
             neuron: Optional[NeuronLabel] = None) -> RunCurve:
    """Read one run: a folder, or several folders that are the segments of one resumed run, ours
    (``config.yaml``) or the original code's (``args.yaml``, a log, or the summary alone). ``neuron``
    labels a run whose files do not record its neuron or threshold; ``label`` names the run in tables."""
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    for folder in folders:
        _check_folder(folder)
    curve = read_curve(folders)
    ordered = list(dict.fromkeys(s.path.parent for s in curve.segments))  # the folders in training order
    log = read_logs(ordered)
    source, settings = _merged_settings(ordered, log)
    # Our config records every setting, so a missing threshold means the neuron has none; the original code's
    # thresholds were constants in its source, so there a missing one is simply unknown.
    recorded = source == OURS or settings.get("v_threshold") is not None
    mode, threshold, from_label = _labelled(neuron, settings, recorded, ordered[0])
    return RunCurve(folder=ordered[0], source=source, epochs=[r.epoch for r in curve.rows],
                    eval_top1=[r.top1 for r in curve.rows], eval_top5=[r.top5 for r in curve.rows],
                    mode=mode, v_threshold=threshold, threshold_recorded=recorded, seed=settings.get("seed"),
                    dataset=settings.get("dataset"),
                    # our config.yaml of an earlier version names no model: it could only train sdt
                    model=settings.get("model") or ("sdt" if source == OURS else None),
                    label=label or "+".join(f.name for f in ordered), replaced=curve.replaced,
                    segments=curve.segments, folders=ordered, log=log, from_label=from_label)


HEADERS = ("run", "source", "model", "mode", "u_th", "epochs", "best top-1 (epoch)", "final top-1",
           f"mean of last {LAST_N}")
RIGHT_ALIGNED = (False, False, False, False, False, True, True, True, True)
PARAMS_HEADER = "params"  # a column only when a training log gave some run's parameter count


def _threshold_text(run: RunCurve) -> str:
    if "v_threshold" in run.from_label:
        return "-" if run.v_threshold is None else f"{run.v_threshold:g} (label)"
    if not run.threshold_recorded:
        return "not recorded"
    return "-" if run.v_threshold is None else f"{run.v_threshold:g}"


def _row(run: RunCurve, params: bool) -> list[str]:
    best_top1, best_epoch = run.best
    used = min(LAST_N, len(run.eval_top1))
    last = f"{run.last_mean(LAST_N):.2f}" + ("" if used == LAST_N else f" (last {used})")
    mode = (run.mode or "-") + (" (label)" if "mode" in run.from_label else "")
    cells = [run.label, run.source, run.model or "-", mode, _threshold_text(run), str(len(run.epochs)),
             f"{best_top1:.2f} ({best_epoch}{', replaced' if run.best_replaced else ''})", f"{run.final:.2f}", last]
    return cells + ([f"{run.param_count:,}" if run.param_count is not None else "-"] if params else [])


def _spans(gaps: Sequence[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in gaps)


def run_notes(run: RunCurve) -> list[str]:
    """What a table cell cannot say: the segments joined, epochs none holds, a best from a replaced row."""
    notes = []
    gaps = missing_epochs(run.epochs)
    if len(run.segments) > 1 or gaps or run.replaced:
        joined = "; ".join(s.span for s in run.segments)
        notes.append(f"{run.label}: {len(run.segments)} segment{'s' if len(run.segments) > 1 else ''} joined "
                     f"({joined})" + (f"; epochs {_spans(gaps)} in none" if gaps else ""))
    if run.best_replaced:
        (top1, epoch), (curve_top1, curve_epoch) = run.best, run.curve_best
        notes.append(f"{run.label}: its best, {top1:.2f} at epoch {epoch}, is a row a later segment trained again "
                     f"(each segment kept its own best checkpoint); the joined curve's best is {curve_top1:.2f} "
                     f"(epoch {curve_epoch})")
    return notes


def _table(runs: Sequence[RunCurve]) -> tuple[list[str], list[list[str]], tuple[bool, ...], list[str]]:
    params = any(run.param_count is not None for run in runs)
    headers = list(HEADERS) + ([PARAMS_HEADER] if params else [])
    right = RIGHT_ALIGNED + ((True,) if params else ())
    return headers, [_row(run, params) for run in runs], right, [n for run in runs for n in run_notes(run)]


def runs_table(runs: Sequence[RunCurve]) -> str:
    """The runs as an aligned plain-text table, numbers right-aligned, and notes below it where needed."""
    headers, body, right_aligned, notes = _table(runs)
    rows = [headers] + body
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w)
                         for c, w, right in zip(cells, widths, right_aligned)).rstrip()

    lines = [line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]]
    return "\n".join(lines + [f"* {n}" for n in notes]) + "\n"


def runs_markdown(runs: Sequence[RunCurve]) -> str:
    """The runs as a Markdown table, numbers right-aligned, and notes below it where needed."""
    headers, body, right_aligned, notes = _table(runs)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if right else "---" for right in right_aligned) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in body] + ([""] if notes else [])
                     + [f"- {n}" for n in notes]) + "\n"
