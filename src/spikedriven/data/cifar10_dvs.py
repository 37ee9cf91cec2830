"""CIFAR10-DVS: 10,000 event streams (10 classes, 128x128, 2 polarities), SpikingJelly's layout.

No official split: the original trains on the first ceil(0.9 n) samples of
each class in dataset order and tests on the rest (SpikingJelly's
``split_to_train_test_set(0.9, dataset, 10)``, not random).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dvs import EventDatasetDef, EventFramesDataset, cache_frames, frames_folder
from .events import convert_all, extract_zips, folder_samples, read_aedat2, save_npz
from .registry import register_dataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_SHARE = 0.9


def split_per_class(labels: np.ndarray, num_classes: int, share: float = TRAIN_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first ceil(share n) samples of each class (in dataset order), and of the rest."""
    train, test = [], []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        cut = math.ceil(len(members) * share)
        train.extend(members[:cut])
        test.extend(members[cut:])
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def make_events_np(root: Path) -> None:
    """``events_np/<class>/<name>.npz`` from the raw ``extract/<class>/<name>.aedat`` (unpacking
    ``download/*.zip`` first where ``extract/`` is missing)."""
    extract, events = root / "extract", root / "events_np"
    if not extract.is_dir():
        extract_zips(root / "download", extract)
    jobs = []
    for aedat in sorted(extract.glob("*/*.aedat")):
        target = events / aedat.parent.name / (aedat.stem + ".npz")
        if not target.exists():
            jobs.append((lambda s, t: save_npz(t, **read_aedat2(s)), (aedat, target)))
    if not jobs and not events.is_dir():
        raise DataError(f"dataset not found: no .aedat files in {extract}/<class>/")
    convert_all(jobs, "CIFAR10-DVS events")


@register_dataset
class Cifar10DVS(EventDatasetDef):
    name, title, num_classes = "cifar10-dvs", "CIFAR10-DVS", 10
    layout = ("events_np/<class>/*.npz (SpikingJelly's layout), or the raw extract/<class>/*.aedat, or the 10 "
              "class archives in download/")

    def datasets(self, cfg):
        root = Path(cfg.data_dir)
        if not root.is_dir():
            raise DataError(f"dataset not found: {root} does not exist; cifar10-dvs reads {self.layout} under --data-dir")
        if not any((root / d).is_dir() for d in ("events_np", "extract", "download")):
            found = ", ".join(sorted(e.name + "/" for e in root.iterdir())) or "nothing"
            raise DataError(f"dataset not found: {root} holds {found}; cifar10-dvs reads {self.layout}")
        if not (root / "events_np").is_dir():
            make_events_np(root)
        events_files, labels, classes = folder_samples(root / "events_np")
        if len(classes) != self.num_classes:
            raise DataError(f"{root / 'events_np'} holds {len(classes)} class folders ({', '.join(classes)}), not 10")
        empty = [c for i, c in enumerate(classes) if not (labels == i).any()]
        if empty:
            raise DataError(f"class folder {root / 'events_np' / empty[0]} holds no .npz samples")
        files = cache_frames(events_files, root / "events_np", frames_folder(root, cfg.time_steps), cfg.time_steps, self.sensor)
        train_idx, test_idx = split_per_class(labels, self.num_classes)
        everything = EventFramesDataset(files, labels, cfg.time_steps, self.sensor, seed=cfg.seed)
        train_tf, eval_tf = self.transforms(cfg)
        return everything.subset(train_idx, train_tf), everything.subset(test_idx, eval_tf)

    def present(self, data_dir) -> bool:
        root = Path(data_dir)
        return any((root / d).is_dir() for d in ("events_np", "extract", "download"))

    def write_fake(self, root, n_per_class: int = 5, events: int = 3000, seed: int = 0, **_) -> Path:
        """Raw AEDAT 2.0 recordings in ``extract/<class>/``, as the CIFAR10-DVS archives unpack: each class
        fires around its own spot of the sensor, so a model can learn something. Returns ``root``."""
        rng = np.random.default_rng(seed)
        root = Path(root)
        for c, name in enumerate(CLASSES):
            folder = root / "extract" / name
            folder.mkdir(parents=True, exist_ok=True)
            centre = np.array([16 + 10 * c, 120 - 10 * c])
            for i in range(n_per_class):
                column, row = np.clip(centre[:, None] + rng.normal(0, 12, size=(2, events)), 0, 127).astype(np.uint32)
                address = (row << 8) | (column << 1) | rng.integers(0, 2, size=events, dtype=np.uint32)
                t = np.cumsum(rng.integers(1, 50, size=events)).astype(np.uint32)
                words = np.stack([address, t], axis=1).astype(">u4")
                header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Data format is int32 address, int32 timestamp\r\n"
                (folder / f"cifar10_{name}_{i}.aedat").write_bytes(header + words.tobytes())
        return root
