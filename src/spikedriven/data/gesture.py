"""DVS128 Gesture: 1,342 recordings of 11 gestures by 29 users (official train / test split by
user), 128x128, 2 polarities, in SpikingJelly's layout.

The raw ``extract/DvsGesture/`` holds one AEDAT 3.1 file per trial (a user
under one lighting) with a ``_labels.csv`` of (class, start, end) times, and
``trials_to_train.txt`` / ``trials_to_test.txt``. Each (class, start, end) row
is one sample: the events with start <= t < end, saved as
``events_np/<split>/<class - 1>/<trial>_<k>.npz``, k counting that class's
samples in the trial. Labels follow the class folders' DatasetFolder order
("0", "1", "10", "2", ...), as with SpikingJelly and the original.
"""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dvs import EventDatasetDef, EventFramesDataset, cache_frames, frames_folder
from .events import convert_all, folder_samples, read_aedat3, save_npz
from .registry import register_dataset

NUM_CLASSES = 11


def split_trial(aedat: Path, labels_csv: Path, out: Path) -> None:
    events = read_aedat3(aedat)
    try:
        rows = np.loadtxt(labels_csv, dtype=np.uint32, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"labels file {labels_csv} cannot be read ({e})") from None
    count = [0] * NUM_CLASSES
    for label, start, end in rows[:, :3]:
        label = int(label) - 1  # the csv counts classes from 1
        if not 0 <= label < NUM_CLASSES:
            raise DataError(f"labels file {labels_csv} names class {label + 1}, outside 1..{NUM_CLASSES}")
        inside = (events["t"] >= start) & (events["t"] < end)
        save_npz(out / str(label) / f"{aedat.stem}_{count[label]}.npz", **{k: v[inside] for k, v in events.items()})
        count[label] += 1


def make_events_np(root: Path) -> None:
    raw = root / "extract" / "DvsGesture"
    if not raw.is_dir():
        archive = root / "download" / "DvsGesture.tar.gz"
        if not archive.is_file():
            raise DataError(f"dataset not found: no events_np/, extract/DvsGesture/ or download/DvsGesture.tar.gz in {root}")
        with tarfile.open(archive) as tar:
            tar.extractall(root / "extract", filter="data")
    jobs = []
    for split in ("train", "test"):
        listing = raw / f"trials_to_{split}.txt"
        if not listing.is_file():
            raise DataError(f"dataset {raw} lacks {listing.name}, which lists the {split} recordings")
        for name in listing.read_text().split():
            aedat = raw / name
            labels = raw / f"{aedat.stem}_labels.csv"
            for needed in (aedat, labels):
                if not needed.is_file():
                    raise DataError(f"{listing} names {name}, but {needed} does not exist")
            jobs.append((split_trial, (aedat, labels, root / "events_np" / split)))
    convert_all(jobs, "DVS128 Gesture events")


@register_dataset
class DVS128Gesture(EventDatasetDef):
    name, title, num_classes = "dvs128-gesture", "DVS128 Gesture", NUM_CLASSES
    aliases = ("gesture",)
    layout = "events_np/{train,test}/<class>/*.npz (SpikingJelly's layout), or the raw extract/DvsGesture/, or download/DvsGesture.tar.gz"

    def _split(self, cfg, root: Path, split: str, transform) -> EventFramesDataset:
        events_root = root / "events_np" / split
        files, labels, classes = folder_samples(events_root)
        if len(classes) != self.num_classes:
            raise DataError(f"{events_root} holds {len(classes)} class folders, not {self.num_classes}")
        empty = [c for i, c in enumerate(classes) if not (labels == i).any()]
        if empty:
            raise DataError(f"class folder {events_root / empty[0]} holds no .npz samples")
        frames = cache_frames(files, events_root, frames_folder(root, cfg.time_steps) / split, cfg.time_steps, self.sensor)
        return EventFramesDataset(frames, labels, cfg.time_steps, self.sensor, transform, cfg.seed)

    def datasets(self, cfg):
        root = Path(cfg.data_dir)
        if not root.is_dir():
            raise DataError(f"dataset not found: {root} does not exist; dvs128-gesture reads {self.layout} under --data-dir")
        if not self.present(root):
            found = ", ".join(sorted(e.name + "/" for e in root.iterdir())) or "nothing"
            raise DataError(f"dataset not found: {root} holds {found}; dvs128-gesture reads {self.layout}")
        if not (root / "events_np").is_dir():
            make_events_np(root)
        train_tf, eval_tf = self.transforms(cfg)
        return self._split(cfg, root, "train", train_tf), self._split(cfg, root, "test", eval_tf)

    def present(self, data_dir) -> bool:
        root = Path(data_dir)
        return any((root / d).exists() for d in ("events_np", "extract/DvsGesture", "download/DvsGesture.tar.gz"))

    def write_fake(self, root, users: tuple = (1, 2, 3), test_users: tuple = (3,), events: int = 400, seed: int = 0, **_) -> Path:
        """Raw AEDAT 3.1 trials in ``extract/DvsGesture/`` with their label files and train/test lists,
        as the official archive unpacks; every trial performs each gesture once. Returns ``root``."""
        rng = np.random.default_rng(seed)
        raw = Path(root) / "extract" / "DvsGesture"
        raw.mkdir(parents=True, exist_ok=True)
        trials = {"train": [], "test": []}
        for user in users:
            stem = f"user{user:02d}_fluorescent"
            rows, packets, start = [], [], 1000
            for gesture in range(1, NUM_CLASSES + 1):
                t = start + np.sort(rng.integers(0, 10_000, size=events))
                x = np.clip(8 + 10 * gesture + rng.normal(0, 6, size=events), 0, 127).astype(np.uint32)
                y = np.clip(64 + rng.normal(0, 20, size=events), 0, 127).astype(np.uint32)
                p = rng.integers(0, 2, size=events, dtype=np.uint32)
                word = (x << 17) | (y << 2) | (p << 1) | 1  # bit 0: the event is valid
                payload = np.stack([word, t.astype(np.uint32)], axis=1).astype("<u4").tobytes()
                # type 1 (polarity), source, event size 8, ts offset 4, ts overflow 0, capacity, number, valid
                packets.append(struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, events, events, events) + payload)
                rows.append(f"{gesture},{start},{start + 10_000}")
                start += 12_000
            (raw / f"{stem}.aedat").write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n" + b"".join(packets))
            (raw / f"{stem}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + "\n".join(rows) + "\n")
            trials["test" if user in test_users else "train"].append(f"{stem}.aedat")
        for split, names in trials.items():
            (raw / f"trials_to_{split}.txt").write_text("\n".join(names) + "\n")
        return Path(root)
