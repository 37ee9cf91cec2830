"""ImageNet-1K from the standard folder layout: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``.

The images and their classes are found by timm's dataset factory (its image
folder reader: class folders in natural order, files sorted by name), and
augmented by timm's transform factory with the config's recipe (random
resized crop, flip, RandAugment; the evaluation resize and centre crop at
``crop_pct``). ``eval_img_size: 288`` evaluates at 288 px, as the original's
``--large-valid``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import FolderImageDataset, build_transforms
from .registry import DatasetDef, register_dataset


def _split_folder(root: Path, names: tuple) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"dataset not found: imagenet expects {root}/{names[0]}/<class>/*.JPEG (the standard folder layout)")


def scan(folder: Path, class_to_idx: dict | None = None) -> tuple[list[Path], np.ndarray, dict]:
    """The images of a class-folder tree and their labels, as timm's dataset factory finds them."""
    from timm.data import create_dataset

    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DataError(f"{folder} holds no class folders")
    dataset = create_dataset("", root=str(folder), split="", search_split=False, class_map=class_to_idx or "")
    samples = dataset.reader.samples
    found = {Path(p).parent.name for p, _ in samples}
    empty = [c for c in classes if c not in found]
    if empty:
        raise DataError(f"class folder {folder / empty[0]} holds no images")
    return [Path(p) for p, _ in samples], np.asarray([t for _, t in samples], dtype=np.int64), dataset.reader.class_to_idx


@register_dataset
class ImageNet(DatasetDef):
    name, title, num_classes, in_chans = "imagenet", "ImageNet-1K", 1000, 3
    layout = "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def check_config(self, cfg) -> None:
        if cfg.in_chans != 3:
            raise DataError(f"imagenet images have 3 channels but in_chans is {cfg.in_chans}")

    def datasets(self, cfg):
        root = Path(cfg.data_dir)
        train_files, train_labels, class_to_idx = scan(_split_folder(root, ("train",)))
        if len(class_to_idx) != cfg.num_classes:
            raise DataError(f"{root / 'train'} holds {len(class_to_idx)} classes but num_classes is {cfg.num_classes}")
        val_folder = _split_folder(root, ("val", "validation"))
        unknown = sorted(set(e.name for e in os.scandir(val_folder) if e.is_dir()) - set(class_to_idx))
        if unknown:
            raise DataError(f"{val_folder} has class folders that train/ lacks: {', '.join(unknown[:5])}")
        val_files, val_labels, _ = scan(val_folder, class_to_idx)
        train = FolderImageDataset(train_files, train_labels, build_transforms(cfg, True), cfg.seed)
        test = FolderImageDataset(val_files, val_labels, build_transforms(cfg, False, eval_size=cfg.eval_img_size))
        return train, test

    def present(self, data_dir) -> bool:
        return (Path(data_dir) / "train").is_dir() and any((Path(data_dir) / v).is_dir() for v in ("val", "validation"))

    def write_fake(self, root, classes: int = 4, train_per_class: int = 6, val_per_class: int = 2, seed: int = 0, **_) -> Path:
        """Small JPEGs of a few classes (each its own colour, random sizes) in ``train/`` and ``val/``,
        with wnid-like folder names. Returns ``root``."""
        rng = np.random.default_rng(seed)
        root = Path(root)
        for c in range(classes):
            colour = rng.integers(0, 256, size=3)
            for split, n in (("train", train_per_class), ("val", val_per_class)):
                folder = root / split / f"n{c:08d}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    h, w = rng.integers(24, 48, size=2)
                    pixels = np.clip(colour + rng.normal(0, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"n{c:08d}_{i}.JPEG", quality=90)
        return root
