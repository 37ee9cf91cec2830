"""Image datasets and their transforms (timm's transform factory).

A sample leaves the dataset as a uint8 ``[H, W, C]`` array: the transform
ends in the PIL image, and whole batches are converted and normalised on the run's
device (``batches.ImageNormalizer``), with exactly the numbers of timm's per-image
``ToTensor`` + ``Normalize``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
from PIL import Image
from timm.data import auto_augment, create_transform
from timm.data.transforms import MaybePILToTensor, RandomResizedCropAndInterpolation

from ..errors import DataError
from .loaders import SeededDataset

if TYPE_CHECKING:
    from ..config import Config


class ArrayImageDataset(SeededDataset):
    """Images held as one uint8 array ``[n, H, W, C]`` with integer labels.

    Without a transform the images are used as stored, and a list of indices
    gives a whole batch ``(uint8 [B, H, W, C] array, labels)`` in one lookup.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Optional[Callable] = None, seed: int = 0):
        super().__init__(transform, seed)
        self.images, self.labels = images, labels

    @property
    def whole_batches(self) -> bool:
        return self.transform is None

    def _sample(self, i: int):
        if self.transform is None:
            return self.images[i], int(self.labels[i])
        return np.asarray(self.transform(Image.fromarray(self.images[i]))), int(self.labels[i])

    def _batch(self, indices: list):
        if self.transform is not None:
            raise TypeError("whole batches are served only without a transform")
        idx = np.asarray(indices, dtype=np.int64)
        return self.images[idx], self.labels[idx]

    def subset(self, indices: np.ndarray, transform: Optional[Callable] = None) -> "ArrayImageDataset":
        return ArrayImageDataset(self.images[indices], self.labels[indices], transform, self.seed)


class FolderImageDataset(SeededDataset):
    """Image files (an ImageNet-style class-folder tree, found by timm's dataset factory), decoded one
    at a time. A file that does not decode stops the run with its path (never a silent substitute)."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray, transform: Optional[Callable] = None, seed: int = 0):
        super().__init__(transform, seed)
        self.files, self.labels = list(files), labels

    def _sample(self, i: int):
        path = self.files[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except Exception as e:  # PIL fails in many ways on a damaged file
            raise DataError(f"image {path} cannot be decoded ({type(e).__name__}: {e}); replace or remove it") from None
        if self.transform is not None:
            img = self.transform(img)
        return np.asarray(img), int(self.labels[i])

    def subset(self, indices: np.ndarray, transform: Optional[Callable] = None) -> "FolderImageDataset":
        return FolderImageDataset([self.files[i] for i in indices], self.labels[indices], transform, self.seed)


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    # RandAugment's increasing posterize keeps "4 down to 0" bits: 0 at the top
    # magnitude 10, which the study's m9 with mstd0.4 noise reaches in about 1 of
    # 160 posterize draws (dozens per CIFAR epoch). Pillow 13 refuses 0 bits and
    # the worker, and with it the run, would fail; older Pillow returned a black
    # image, so return that.
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def _patch_posterize(transform) -> None:
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):  # timm's RandAugment / AutoAugment ops
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = _posterize


def _use_ops(transform, config_str: str, names: Sequence[str]) -> None:
    """Rebuild timm's RandAugment in ``transform`` by timm, from the same ``aa`` string (magnitude, noise, ops per
    image) over the ops ``names``, as Spikformer's CIFAR recipe picks five. Its hparams (fill colour,
    translation, interpolation), which timm's transform factory worked out and every op keeps a copy of, are
    handed on unchanged."""
    for i, t in enumerate(transform.transforms):
        if isinstance(t, auto_augment.RandAugment):
            hparams = dict(t.ops[0].hparams)
            transform.transforms[i] = auto_augment.rand_augment_transform(config_str, hparams, transforms=list(names))


def build_transforms(cfg: "Config", train: bool, normalize: bool = False, image_size: Optional[int] = None,
                     eval_size: Optional[int] = None):
    """timm's transform for ``cfg``. By default it ends in the PIL image, which
    the dataset hands on as a uint8 array, and the loaders normalise whole
    batches (``batches.ImageNormalizer``); ``normalize=True`` gives the per-image
    float pipeline, the reference. For square images of ``image_size`` a
    training crop that would return them unchanged (``scale`` and ``ratio``
    [1, 1] at ``img_size``, the study's "no random crop") is left out.
    ``eval_size``: evaluate at another size than ``img_size`` (ImageNet at 288). ``aa_ops``
    picks RandAugment's ops."""
    size = eval_size if (eval_size and not train) else cfg.img_size
    transform = create_transform(
        input_size=(cfg.in_chans, size, size),
        is_training=train,
        scale=tuple(cfg.scale),
        ratio=tuple(cfg.ratio),
        hflip=cfg.hflip,
        vflip=0.0,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.aa,
        interpolation=cfg.interpolation,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        crop_pct=cfg.crop_pct,
        use_prefetcher=not normalize,  # timm's name for "no per-image ToTensor/Normalize"
    )
    if train and cfg.aa_ops:
        _use_ops(transform, cfg.aa, cfg.aa_ops)
    _patch_posterize(transform)
    identity_crop = image_size == cfg.img_size and list(cfg.scale) == [1.0, 1.0] and list(cfg.ratio) == [1.0, 1.0]
    transform.transforms = [
        t for t in transform.transforms
        if not (identity_crop and isinstance(t, RandomResizedCropAndInterpolation)) and not isinstance(t, MaybePILToTensor)
    ]
    return transform


def eval_transform_is_identity(cfg: "Config", image_size: int) -> bool:
    """timm's evaluation transform resizes to ``img_size / crop_pct`` and crops
    the centre ``img_size``: on square images of that size already (CIFAR at
    32, the digits as served) it returns them unchanged."""
    return cfg.img_size == image_size and math.floor(cfg.img_size / cfg.crop_pct) == cfg.img_size


def square_size(images: np.ndarray) -> Optional[int]:
    """The side of ``[n, H, W, C]`` images when they are square."""
    return images.shape[1] if images.shape[1] == images.shape[2] else None


def array_datasets(cfg: "Config", train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]):
    """Training and test sets of images held in memory, with timm's transforms (none at evaluation
    where it would return the images unchanged: then a batch is one array lookup)."""
    images, labels = train
    size, eval_size = square_size(images), cfg.eval_img_size or cfg.img_size
    identity = size is not None and eval_size == cfg.img_size and eval_transform_is_identity(cfg, size)
    eval_tf = None if identity else build_transforms(cfg, False, eval_size=eval_size)
    return (ArrayImageDataset(images, labels, build_transforms(cfg, True, image_size=size), cfg.seed),
            ArrayImageDataset(test[0], test[1], eval_tf))
