"""scikit-learn's bundled 8x8 digits: real data that needs no download (the offline demo)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import array_datasets
from .registry import DatasetDef, register_dataset

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def read_digits(img_size: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The digits as RGB uint8 ``img_size`` squares; a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
    )
    idx = idx_train if train else idx_test
    resized = np.stack(
        [np.asarray(Image.fromarray(images[i]).resize((img_size, img_size), Image.BICUBIC).convert("RGB")) for i in idx]
    )
    return resized, digits.target[idx].astype(np.int64)


@register_dataset
class Digits(DatasetDef):
    name, title, num_classes, in_chans = "sklearn/digits", "scikit-learn digits (8x8)", 10, 3
    layout = "nothing: scikit-learn ships it"
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def check_config(self, cfg) -> None:
        if cfg.num_classes != 10 or cfg.in_chans != 3:
            raise DataError("sklearn/digits has 10 classes and is served as 3-channel images: set num_classes: 10, in_chans: 3")

    def datasets(self, cfg):
        return array_datasets(cfg, read_digits(cfg.img_size, True), read_digits(cfg.img_size, False))

    def present(self, data_dir) -> bool:
        return True

    def write_fake(self, root, **kwargs):
        return root  # nothing to write: the data ships with scikit-learn
