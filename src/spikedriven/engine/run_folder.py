"""A run folder: what it holds, how it is created, and how a run in it is never lost.

``config.yaml``, ``summary.csv``, ``curves.png`` (redrawn after every epoch), ``log.txt``, TensorBoard
events, ``last.pth.tar``, ``best.pth.tar`` and, at the end, ``results.json``. A fresh
run into a folder that already holds one is refused; ``--overwrite`` moves the
old run aside (``<folder>.replaced-<time>``) instead of deleting anything.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import sys
from datetime import datetime
import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from ..atomic import atomic_write
from ..config import Config
from .run_lock import RunLock
from ..errors import ConfigError

log = logging.getLogger("spikedriven")

# mean_firing_rate last: files written before it had the other columns in this order
SUMMARY_FIELDS = ["epoch", "lr", "train_loss", "eval_loss", "eval_top1", "eval_top5", "train_seconds", "epoch_seconds",
                  "images_per_s", "mean_firing_rate"]
CURVES_FILE = "curves.png"


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = cfg.dataset.split("/")[-1]
    return Path("output/train") / f"{stamp}-{dataset}-{cfg.model}-{cfg.spike_mode}-uth{cfg.v_threshold:g}-seed{cfg.seed}"


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds something a run trained: a checkpoint, a finished epoch or results.
    (Files of a start interrupted before its first step, such as config.yaml and log.txt, are not.)"""
    return path.is_dir() and (any((path / name).exists() for name in ("last.pth.tar", "best.pth.tar", "results.json"))
                              or bool(read_summary_rows(path)))


def describe_run(path: Path) -> str:
    """What the run in ``path`` got to, in a few words: 'a finished run (best top-1 99.72 % at epoch 11, ...)'."""
    try:
        results = json.loads((path / "results.json").read_text())
        return (f"a finished run (best top-1 {results['best_top1']:.2f} % at epoch {results['best_epoch']}, "
                f"final {results['final_top1']:.2f} %)")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    rows = read_summary_rows(path)
    if rows:
        return f"a run of {len(rows)} finished epoch{'s' if len(rows) > 1 else ''}"
    return "a run stopped in its first epoch"


def refuse_if_holds_run(path: Path, command_hint: str) -> None:
    """A fresh run must not write into ``path`` if another run lives there."""
    if not holds_run(path):
        return
    has_checkpoint = any((path / name).exists() for name in ("last.pth.tar", "best.pth.tar"))
    resume = f"continue it with `{command_hint} --resume {shlex.quote(str(path))}`, " if has_checkpoint else ""
    raise ConfigError(
        f"output folder {path} already holds {describe_run(path)}; {resume}train into another --output, or add "
        "--overwrite to move it aside (it is kept, renamed to <folder>.replaced-<time>)"
    )


def move_aside(path: Path) -> Path:
    """Rename the run in ``path`` to a sibling ``<name>.replaced-<time>``; nothing is deleted."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 2
    while target.exists():
        target = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
        n += 1
    try:
        path.rename(target)
    except OSError as e:
        raise ConfigError(f"cannot move the run in {path} aside to {target} ({e.strerror or e})") from None
    return target


def prepare_run_dir(path: Path) -> RunLock:
    """Create the run folder and take its lock (held until released or the process ends); returns the lock."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {path} is not writable ({e.strerror or e})") from None
    lock = RunLock(path).acquire()  # before the clean-up below: another run's temporary files are its own
    for stale in path.glob(".*.tmp"):  # a checkpoint write cut short by a crash
        stale.unlink()
    return lock


class ConsoleHandler(logging.Handler):
    """Log lines on the console, written through tqdm so that a progress bar on a terminal is not
    torn by them, to whatever ``sys.stderr`` is when a line is written (not when the handler was made)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # as logging's own handlers do: a broken console must not end the run
            self.handleError(record)


def setup_logging(run_dir: Optional[Path], is_main: bool) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    console = ConsoleHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if run_dir is not None and is_main:
        file_handler = logging.FileHandler(run_dir / "log.txt")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(file_handler)


def read_summary_rows(path: Path) -> list[dict]:
    try:
        with open(path / "summary.csv", newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit()]
    except OSError:
        return []


class SummaryCSV:
    """``summary.csv`` with one row per finished epoch; rows from an abandoned future are dropped on resume."""

    def __init__(self, path: Path):
        self.path = path

    def keep_before(self, epoch: int) -> None:
        rows = [r for r in read_summary_rows(self.path.parent) if int(r["epoch"]) < epoch]
        with atomic_write(self.path, newline="") as f:
            writer = csv.DictWriter(f, SUMMARY_FIELDS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in SUMMARY_FIELDS} for r in rows)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, SUMMARY_FIELDS).writerow({k: row[k] for k in SUMMARY_FIELDS})
            f.flush()
            os.fsync(f.fileno())


# ------------------------------------------------------------------ curves


def _column(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The epochs that have a value for ``key`` and those values (a file of an earlier version lacks some)."""
    points = []
    for r in rows:
        try:
            points.append((int(r["epoch"]), float(r[key])))
        except (KeyError, TypeError, ValueError):
            continue
    return [e for e, _ in points], [v for _, v in points]


def _run_title(run_dir: Path) -> str:
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    u_th = cfg.get("v_threshold")
    neuron = cfg.get("spike_mode") and f"neuron {cfg['spike_mode']}" + (f" u_th {u_th:g}" if u_th is not None else "")
    dataset = cfg.get("dataset")
    parts = [cfg.get("model"), neuron, dataset and str(dataset).split("/")[-1]]
    return f"{run_dir.name}: " + ", ".join(str(p) for p in parts if p) if any(parts) else run_dir.name


def run_curves_figure(run_dir: Path):
    """A run's curves from its folder alone: loss, top-1, learning rate and mean firing rate per epoch."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ..plotting import wrap

    run_dir = Path(run_dir)
    rows = read_summary_rows(run_dir)
    # fixed margins rather than a layout engine: a redraw each epoch must stay cheap
    fig = Figure(figsize=(9.0, 6.4))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.84, hspace=0.45, wspace=0.25)
    axes = fig.subplots(2, 2, sharex=True).flatten()
    panels = [("loss", [("train_loss", "train"), ("eval_loss", "eval")]), ("eval top-1 (%)", [("eval_top1", None)]),
              ("learning rate", [("lr", None)]), ("mean firing rate (eval)", [("mean_firing_rate", None)])]
    for ax, (label, series) in zip(axes, panels):
        for key, name in series:
            epochs, values = _column(rows, key)
            ax.plot(epochs, values, marker="o", markersize=3, label=name)
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=8)
        if len(series) > 1:
            ax.legend(fontsize=8)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes[2:]:
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(wrap(_run_title(run_dir) + f"\n{len(rows)} epoch{'s' if len(rows) != 1 else ''} (summary.csv)",
                      fig.get_figwidth() - 0.4, 11), fontsize=11)
    return fig


_CURVES_WARNED: set = set()


CURVES_ENV = "SPIKEDRIVEN_RUN_CURVES"  # "0": runs draw no curves.png (the test suite's many tiny runs)


class RunCurves:
    """Redraws a run's ``curves.png`` as it goes, at most every ``every`` seconds, and always after its last
    epoch or at a stop: a drawing costs about 0.3 s, a tenth of a short epoch, and nothing is lost by skipping
    some, since each drawing holds every epoch so far. The environment variable ``SPIKEDRIVEN_RUN_CURVES=0``
    turns the drawing off (the test suite sets it for its hundreds of runs of a few seconds, and draws in the tests
    that check the figure); unset, or any other value, draws as usual. ``write_run_curves`` draws a run
    folder's figure from its summary.csv at any time afterwards."""

    def __init__(self, run_dir: Path, every: float = 30.0):
        self.run_dir, self.every = Path(run_dir), every
        self.last = time.monotonic()  # from the run's start: a first epoch shorter than ``every`` is not drawn
        self.enabled = os.environ.get(CURVES_ENV, "").strip() != "0"

    def update(self, final: bool = False) -> Optional[Path]:
        if not self.enabled or (not final and time.monotonic() - self.last < self.every):
            return None
        written = write_run_curves(self.run_dir)
        self.last = time.monotonic()
        return written


def write_run_curves(run_dir: Path) -> Optional[Path]:
    """Redraw ``curves.png`` from the run folder, whole or not at all. Never raises: a run goes on without
    its plot, and says why once."""
    from ..plotting import save_png

    try:
        # zlib's fastest level: a fifth of the encoding time for a file a fifth larger
        return save_png(run_curves_figure(run_dir), Path(run_dir) / CURVES_FILE, dpi=100, compress_level=1)
    except Exception as e:  # noqa: BLE001 - matplotlib, fonts, a full disk: none of it may stop training
        if str(run_dir) not in _CURVES_WARNED:
            _CURVES_WARNED.add(str(run_dir))
            log.warning("could not draw %s (%s: %s); training goes on, the curves are in summary.csv",
                        Path(run_dir) / CURVES_FILE, type(e).__name__, e)
        return None
