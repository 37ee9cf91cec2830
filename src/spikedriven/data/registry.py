"""Datasets by name: each dataset is one class in one file of this package, registered here.

A dataset definition says what the dataset is (classes, channels, native
size), where it lies on disk and how that is checked (naming what is
missing), how it is read and transformed, and how tests write a tiny copy of
it in the same on-disk format. The loaders (``loaders``) serve every dataset
alike: per-sample seeded augmentation, ``workers: auto``, whole-batch
normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional, Sequence

from ..errors import ConfigError, DataError, did_you_mean

if TYPE_CHECKING:
    from ..config import Config
    from .loaders import SeededDataset

__all__ = ["DATASETS", "DatasetDef", "dataset_def", "register_dataset"]


class DatasetDef:
    name: ClassVar[str]  # the config's `dataset`
    aliases: ClassVar[tuple[str, ...]] = ()  # the original configs' names for it
    title: ClassVar[str] = ""
    num_classes: ClassVar[int]
    in_chans: ClassVar[int]
    frames: ClassVar[bool] = False  # samples are [T, C, H, W] event frames (the input then brings its own T)
    layout: ClassVar[str] = ""  # where it lies under --data-dir, for messages and `spikedriven info`
    mean: ClassVar[tuple[float, ...]] = ()  # its normalisation, the config's default
    std: ClassVar[tuple[float, ...]] = ()

    def check_config(self, cfg: "Config") -> None:
        if cfg.num_classes != self.num_classes:
            raise DataError(f"{self.name} has {self.num_classes} classes but num_classes is {cfg.num_classes}")
        if cfg.in_chans != self.in_chans:
            raise DataError(f"{self.name} samples have {self.in_chans} channels but in_chans is {cfg.in_chans}")

    def datasets(self, cfg: "Config") -> tuple["SeededDataset", "SeededDataset"]:
        """The training set (training transform) and the test set (evaluation transform)."""
        raise NotImplementedError

    def present(self, data_dir: str | Path) -> bool:
        """Whether the dataset lies under ``data_dir`` (without reading it)."""
        return False

    @staticmethod
    def write_fake(root: str | Path, **kwargs) -> Path:
        """A tiny copy in the dataset's own on-disk format, for tests and demos; returns the data folder."""
        raise NotImplementedError


DATASETS: dict[str, DatasetDef] = {}


def register_dataset(cls: type[DatasetDef]) -> type[DatasetDef]:
    instance = cls()
    for name in (cls.name, *cls.aliases):
        if name in DATASETS and type(DATASETS[name]) is not cls:
            raise ValueError(f"a dataset named {name!r} is registered already")
        DATASETS[name] = instance
    return cls


def dataset_def(name: str) -> DatasetDef:
    try:
        return DATASETS[name]
    except KeyError:
        names = sorted({d.name for d in DATASETS.values()})
        # 'digit' is closer to digits than to sklearn/digits: the names are compared without their prefix too
        close = did_you_mean(name, DATASETS, {key.rpartition("/")[2]: key for key in DATASETS})
        message = f"unknown dataset {str(name)!r}{close}; the registered datasets are {', '.join(names)}"
        raise ConfigError(message) from None


def missing_files(folder: Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not (folder / n).exists()]


def need_folder(folder: Path, what: str, hint: Optional[str] = None) -> None:
    if not folder.is_dir():
        raise DataError(f"dataset not found: {what} expects the folder {folder}" + (f"; {hint}" if hint else ""))
