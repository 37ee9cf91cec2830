"""Small datasets in CIFAR's on-disk format, for tests, demos and benchmarks without a download."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .data import CIFAR


def write_fake_cifar(root: str | Path, dataset: str = "torch/cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write random images in exactly the layout torchvision's CIFAR classes read.

    Each class gets a distinct mean colour, so a model can learn something.
    Returns ``root``.
    """
    layout = CIFAR[dataset]
    rng = np.random.default_rng(seed)
    folder = Path(root) / layout.folder
    folder.mkdir(parents=True, exist_ok=True)
    palette = rng.integers(0, 256, size=(layout.num_classes, 3))

    def batch(n: int) -> dict:
        labels = rng.integers(0, layout.num_classes, size=n)
        noise = rng.normal(0, 40, size=(n, 3, 32 * 32))
        data = np.clip(palette[labels][:, :, None] + noise, 0, 255).astype(np.uint8).reshape(n, 3072)
        return {"data": data, layout.label_key: labels.tolist(), "filenames": [f"img{i}.png" for i in range(n)]}

    splits = [(name, n_train // len(layout.train_files)) for name in layout.train_files] + [
        (name, n_test) for name in layout.test_files
    ]
    for name, n in splits:
        with open(folder / name, "wb") as f:
            pickle.dump(batch(n), f)
    meta = {"label_names" if dataset == "torch/cifar10" else "fine_label_names": [f"class{i}" for i in range(layout.num_classes)]}
    with open(folder / layout.meta_file, "wb") as f:
        pickle.dump(meta, f)
    return Path(root)
