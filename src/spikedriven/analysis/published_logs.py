"""The training log of the original code (``sdt.log``, timm's logger): what a published run folder's
summary.csv does not say.

Lines read ``YYYY-MM-DD HH:MM:SS,mmm LEVEL: message``; the messages used:

* ``Model <name> created, param count:<n>``
* ``Scheduled epochs: <n>``
* ``Create dataloader: <dataset>``
* ``Loaded checkpoint '<path>' (epoch <E>)`` (a resumed run)
* ``Train: <epoch> [<i>/<n> (<p>%)]  Loss: ...  LR: <lr> ...``: the learning rate of each epoch
* ``*** Best metric: <top1> (epoch <e>)``

Any other line (``Test:`` lines, warnings, tracebacks) is passed over. Every ``*.log`` file of a run folder
is read, in name order, and so are the folders of a run given in segments: a later log's learning rate for
an epoch replaces an earlier one's, as the later segment's row replaces the earlier's in the summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError

_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+: (.*)")
_MODEL = re.compile(r"Model (\S+) created, param count:\s*(\d+)")
_EPOCHS = re.compile(r"Scheduled epochs: (\d+)")
_DATASET = re.compile(r"Create dataloader: (.+)")
_LOADED = re.compile(r"Loaded checkpoint '(.*)' \(epoch (\d+)\)")
_TRAIN = re.compile(r"Train: (\d+) \[.*\bLR: ([-+0-9.eE]+)")
_BEST = re.compile(r"\*\*\* Best metric: ([-+0-9.eE]+) \(epoch (\d+)\)")


@dataclass
class TrainingLog:
    """What a run's logs say; ``None`` / empty where no line says it."""

    paths: list[Path] = field(default_factory=list)
    model: Optional[str] = None
    param_count: Optional[int] = None
    dataset: Optional[str] = None
    scheduled_epochs: Optional[int] = None
    resumed_from: list[tuple[str, int]] = field(default_factory=list)  # (checkpoint, epoch) per resume
    lr: dict[int, float] = field(default_factory=dict)  # per epoch, from its first Train line
    best_metrics: list[tuple[float, int]] = field(default_factory=list)  # (top1, epoch), as logged

    def settings(self) -> dict:
        """The run settings the log records, under the names args.yaml gives them."""
        found = {"model": self.model, "dataset": self.dataset, "epochs": self.scheduled_epochs}
        return {k: v for k, v in found.items() if v is not None}


def _messages(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror or error})") from None
    return [m[1].strip() for line in text.splitlines() if (m := _LINE.fullmatch(line.strip()))]


def _read_into(log: TrainingLog, path: Path) -> None:
    previous_epoch = None
    for message in _messages(path):
        if m := _TRAIN.match(message):
            epoch = int(m[1])
            if epoch != previous_epoch:  # a stretch of the epoch trained again counts anew
                log.lr[epoch] = float(m[2])
            previous_epoch = epoch
        elif m := _BEST.match(message):
            log.best_metrics.append((float(m[1]), int(m[2])))
        elif m := _MODEL.match(message):
            log.model, log.param_count = m[1], int(m[2])
            previous_epoch = None  # a new start: the epoch it resumes at is trained again
        elif m := _EPOCHS.match(message):
            log.scheduled_epochs = int(m[1])
        elif m := _DATASET.match(message):
            log.dataset = m[1].strip()
        elif m := _LOADED.match(message):
            log.resumed_from.append((m[1], int(m[2])))
            previous_epoch = None


def read_logs(folders: Sequence[Path]) -> Optional[TrainingLog]:
    """The ``*.log`` files of ``folders`` (in that order) read into one ``TrainingLog``; None if there are none."""
    paths = [p for folder in folders for p in sorted(folder.glob("*.log")) if p.is_file()]
    if not paths:
        return None
    log = TrainingLog(paths=paths)
    for path in paths:
        _read_into(log, path)
    return log
