"""Small datasets in each dataset's own on-disk format, for tests, demos and benchmarks without a download."""

from __future__ import annotations

from pathlib import Path

from .data import dataset_def
from .data.cifar import write_fake_cifar


def write_fake_dataset(name: str, root: str | Path, **kwargs) -> Path:
    """A tiny copy of dataset ``name`` under ``root`` (its ``--data-dir``); see each dataset's ``write_fake``."""
    return dataset_def(name).write_fake(root, **kwargs)


__all__ = ["write_fake_cifar", "write_fake_dataset"]
