"""Datasets and loaders.

    registry.py     DatasetDef, register_dataset, dataset_def: each dataset is one file here
    loaders.py      what every dataset shares: seeded per-sample augmentation, samplers, workers
    batches.py      how a batch travels: collates in the workers, transfer, normalisation and erasing on the device
    images.py       image datasets (in memory, or files) and timm's transforms
    cifar.py, digits.py, ...   the datasets; every other module here is one too, imported on its own

    build_datasets(cfg) -> Splits(train, eval, eval_name); build_train_loader / build_eval_loader
"""

from .images import ArrayImageDataset, FolderImageDataset, build_transforms, eval_transform_is_identity, square_size
from .batches import BatchErasing, DeviceBatches, FramesCollate, ImageCollate, ImageNormalizer
from .loaders import (
    EpochSampler, SeededDataset, ShardSampler, Splits, build_datasets, build_eval_loader, build_test_dataset,
    build_train_loader, seeded_generators,
)
from .registry import DATASETS, DatasetDef, dataset_def, register_dataset


def _register_datasets() -> None:
    """Import every dataset module of this package: a new dataset is one new file, found here."""
    import importlib
    import pkgutil

    infrastructure = {"batches", "images", "loaders", "registry"}
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in infrastructure:
            importlib.import_module(f"{__name__}.{module.name}")


_register_datasets()

from .cifar import CIFAR, read_cifar  # noqa: E402  (imported by the loop above already)

__all__ = [
    "CIFAR", "DATASETS", "ArrayImageDataset", "BatchErasing", "DatasetDef", "DeviceBatches", "EpochSampler",
    "FolderImageDataset", "FramesCollate", "ImageCollate", "ImageNormalizer", "SeededDataset", "ShardSampler",
    "Splits", "build_datasets", "build_eval_loader", "build_test_dataset", "build_train_loader", "build_transforms",
    "dataset_def", "eval_transform_is_identity", "read_cifar", "register_dataset", "seeded_generators", "square_size",
]  # fmt: skip
