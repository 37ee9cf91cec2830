"""CIFAR-10 and CIFAR-100 in torchvision's on-disk format (pickled batches).

The reader checks the structure of the pickles itself: torchvision's own
classes also demand the official MD5 sums, which rejects any generated
dataset of the same format.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .images import array_datasets
from .registry import DatasetDef, register_dataset


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_files: tuple
    test_files: tuple
    meta_file: str
    label_key: str
    num_classes: int
    url_hint: str


CIFAR = {
    "torch/cifar10": CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        "labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "torch/cifar100": CifarLayout(
        "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", 100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # any unpickling failure means a broken file
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} should hold a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _expected(root: Path, layout: CifarLayout) -> str:
    return f"{root / layout.folder}/ with {', '.join(layout.train_files + layout.test_files + (layout.meta_file,))}"


def _missing_message(root: Path, layout: CifarLayout, missing) -> str:
    return (
        f"dataset not found: expected {_expected(root, layout)}; "
        f"missing: {', '.join(missing)}. Get it with --download when online, or extract {layout.url_hint} into {root}"
    )


def read_cifar(dataset: str, data_dir: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR pickles into ``[n, 32, 32, 3]`` uint8 images and int64 labels, checking structure."""
    layout = CIFAR[dataset]
    root = Path(data_dir)
    folder = root / layout.folder
    needed = layout.train_files + layout.test_files + (layout.meta_file,)
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise DataError(_missing_message(root, layout, missing))
    images, labels = [], []
    for name in layout.train_files if train else layout.test_files:
        entry = _unpickle(folder / name)
        if "data" not in entry or layout.label_key not in entry:
            raise DataError(f"{folder / name} lacks 'data' or '{layout.label_key}' (keys: {', '.join(map(str, entry))})")
        data = np.asarray(entry["data"])
        lab = np.asarray(entry[layout.label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{folder / name}: 'data' must be uint8 [n, 3072], found {data.dtype} {list(data.shape)}")
        if lab.shape != (data.shape[0],):
            raise DataError(f"{folder / name}: {data.shape[0]} images but {lab.size} labels")
        if lab.size and (lab.min() < 0 or lab.max() >= layout.num_classes):
            raise DataError(f"{folder / name}: labels must lie in 0..{layout.num_classes - 1}, found {lab.min()}..{lab.max()}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab.astype(np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def download_cifar(dataset: str, data_dir: str | Path) -> None:
    """torchvision's download into ``data_dir``; a failed one leaves nothing it made (its folders, its partial
    archive and extraction) and says where the files go, as the message without --download does."""
    import torchvision

    layout = CIFAR[dataset]
    root = Path(data_dir)
    made = [folder for folder in (root, *root.parents) if not folder.exists()]
    archive = root / Path(layout.url_hint).name
    leftovers = [path for path in (archive, root / layout.folder) if not path.exists()]
    cls = torchvision.datasets.CIFAR10 if dataset == "torch/cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(str(root), train=True, download=True)
    except Exception as e:  # network errors come in many types
        _remove(leftovers, made)
        reason = getattr(e, "reason", None) or e  # a URLError's own words, not its <urlopen error ...> wrapper
        raise DataError(
            f"download of {dataset} from {layout.url_hint} failed ({type(e).__name__}: {reason}); without a network, "
            f"fetch that archive elsewhere and extract it into {root}, so that it holds {_expected(root, layout)}"
        ) from None


def _remove(leftovers: list, made: list) -> None:
    """What a failed download wrote that did not exist before it, then the folders it created, deepest first,
    while empty (another process may have written into one since)."""
    import shutil

    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            break


def write_fake_cifar(root: str | Path, dataset: str = "torch/cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Random images in exactly the layout torchvision's CIFAR classes read; each class gets a
    distinct mean colour, so a model can learn something. Returns ``root``."""
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


class _Cifar(DatasetDef):
    in_chans = 3

    def _layout(self) -> CifarLayout:
        return CIFAR[self.name]

    def datasets(self, cfg):
        layout = self._layout()
        if cfg.download and not all((Path(cfg.data_dir) / layout.folder / n).is_file()
                                    for n in layout.train_files + layout.test_files):
            download_cifar(self.name, cfg.data_dir)
        return array_datasets(cfg, read_cifar(self.name, cfg.data_dir, True), read_cifar(self.name, cfg.data_dir, False))

    def present(self, data_dir) -> bool:
        layout = self._layout()
        return all((Path(data_dir) / layout.folder / n).is_file() for n in layout.train_files + layout.test_files)

    def write_fake(self, root, **kwargs) -> Path:
        return write_fake_cifar(root, self.name, **kwargs)


@register_dataset
class Cifar10(_Cifar):
    name, title, num_classes = "torch/cifar10", "CIFAR-10", 10
    aliases = ("cifar10",)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    layout = "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"


@register_dataset
class Cifar100(_Cifar):
    name, title, num_classes = "torch/cifar100", "CIFAR-100", 100
    aliases = ("cifar100",)
    mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
    layout = "cifar-100-python/ (train, test, meta)"
