"""Datasets and loaders: CIFAR-10/100 in torchvision's on-disk format, and
scikit-learn's bundled 8x8 digits for an offline demo.

The CIFAR reader checks the structure of the pickles itself (torchvision's own
classes also demand the official MD5 sums, which rejects any generated
dataset of the same format); ``verify_cifar_checksums`` is the separate check.
Augmentation comes from timm's transform factory; mixup is applied in the
training loop (``engine``), so switching it off at an epoch really happens.

The training loader asks for ``(epoch, index)`` pairs (``EpochSampler``), and
the random augmentation of each image is seeded from (seed, epoch, index)
alone: which worker process draws it, how many workers there are and how many
processes share the data change nothing, so workers can persist across epochs
and a resumed run can start mid-epoch without loading what it skips.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import auto_augment, create_transform
from timm.data.transforms import MaybePILToTensor, RandomResizedCropAndInterpolation
from torch.utils.data import (
    BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info,
)

from .config import Config
from .errors import DataError


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

# Official MD5 sums of the extracted files (as published with the datasets).
CIFAR_MD5 = {
    "torch/cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "torch/cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
}


@contextlib.contextmanager
def seeded_generators(key: str):
    """Seed Python's, NumPy's and torch's global generators (the ones the
    transforms draw from) from ``key``. Outside a loader worker their states
    are restored afterwards, so the main process (mixup) draws as if nothing
    had been loaded."""
    torch_gen = torch.random.default_generator
    saved = None
    if get_worker_info() is None:
        saved = random.getstate(), np.random.get_state(), torch_gen.get_state()
    random.seed(key)  # a str seeds through SHA-512: the same on every platform and run
    derived = random.getrandbits(32)
    np.random.seed(derived)
    torch_gen.manual_seed(derived)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch_gen.set_state(saved[2])


class ArrayImageDataset(Dataset):
    """Images held as one uint8 array ``[n, H, W, C]`` with integer labels.

    Indexed by ``i``, or by ``(epoch, i)``: then the random transform of image
    ``i`` is seeded from ``(seed, epoch, i)`` and gives the same image in any
    process, in any order. A sample is ``(uint8 [H, W, C] array, label)``: the
    transform ends in a PIL image (``build_transforms``), handed on as such an
    array, and the loader converts and normalises whole batches
    (``NormalizingCollate``).
    Without a transform the images are used as stored, and a list of indices
    gives a whole batch ``(uint8 [B, H, W, C] array, labels)`` in one lookup.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Optional[Callable] = None, seed: int = 0):
        self.images, self.labels, self.transform, self.seed = images, labels, transform, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            epoch, i = key
            with seeded_generators(f"{self.seed}:{epoch}:{i}"):
                return self._sample(i)
        if isinstance(key, list):
            return self._batch(key)
        return self._sample(key)

    def _sample(self, i: int):
        if self.transform is None:
            return self.images[i], int(self.labels[i])
        return np.asarray(self.transform(Image.fromarray(self.images[i]))), int(self.labels[i])

    def _batch(self, indices: list):
        if self.transform is not None:
            raise TypeError("whole batches are served only without a transform")
        idx = np.asarray(indices, dtype=np.int64)
        return self.images[idx], self.labels[idx]


class EpochSampler(Sampler):
    """``(epoch, index)`` pairs in the order of a ``DistributedSampler``, from
    ``skip`` samples into the epoch (a mid-epoch resume)."""

    def __init__(self, order: DistributedSampler):
        self.order, self.skip = order, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.order.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        epoch = self.order.epoch
        return ((epoch, i) for i in itertools.islice(self.order, self.skip, None))

    def __len__(self) -> int:
        return len(self.order)  # a whole epoch: progress counts the skipped batches as done


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # any unpickling failure means a broken file
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} should hold a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _missing_message(root: Path, layout: CifarLayout, missing: Sequence[str]) -> str:
    return (
        f"dataset not found: expected {root / layout.folder}/ with {', '.join(layout.train_files + layout.test_files + (layout.meta_file,))}; "
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


def verify_cifar_checksums(dataset: str, data_dir: str | Path) -> dict[str, bool]:
    """MD5 of every file against the official sums: {file: matches}."""
    folder = Path(data_dir) / CIFAR[dataset].folder
    out = {}
    for name, md5 in CIFAR_MD5[dataset].items():
        path = folder / name
        out[name] = path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == md5
    return out


def download_cifar(dataset: str, data_dir: str | Path) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if dataset == "torch/cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(str(data_dir), train=True, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"download of {dataset} into {data_dir} failed ({type(e).__name__}: {e}); place the files by hand instead") from None


DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def read_digits(img_size: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as RGB uint8 ``img_size`` squares; fixed stratified split."""
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


def read_split(cfg: Config, train: bool) -> tuple[np.ndarray, np.ndarray]:
    if cfg.dataset == "sklearn/digits":
        if cfg.num_classes != 10 or cfg.in_channels != 3:
            raise DataError("sklearn/digits has 10 classes and is served as 3-channel images: set num_classes: 10, in_channels: 3")
        return read_digits(cfg.img_size, train)
    layout = CIFAR[cfg.dataset]
    if cfg.num_classes != layout.num_classes:
        raise DataError(f"{cfg.dataset} has {layout.num_classes} classes but num_classes is {cfg.num_classes}")
    if cfg.in_channels != 3:
        raise DataError(f"{cfg.dataset} images have 3 channels but in_channels is {cfg.in_channels}")
    if cfg.download:
        root = Path(cfg.data_dir)
        if not all((root / layout.folder / n).is_file() for n in layout.train_files + layout.test_files):
            download_cifar(cfg.dataset, cfg.data_dir)
    return read_cifar(cfg.dataset, cfg.data_dir, train)


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


def build_transforms(cfg: Config, train: bool, normalize: bool = False, image_size: Optional[int] = None):
    """timm's transform for ``cfg``. By default it ends in the PIL image, which
    the dataset hands on as a uint8 array, and the loaders normalise whole
    batches (``NormalizingCollate``); ``normalize=True`` gives the per-image
    float pipeline, the reference. For square images of ``image_size`` a
    training crop that would return them unchanged (``scale`` and ``ratio``
    [1, 1] at ``img_size``, the study's "no random crop") is left out."""
    transform = create_transform(
        input_size=(cfg.in_channels, cfg.img_size, cfg.img_size),
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
    _patch_posterize(transform)
    identity_crop = image_size == cfg.img_size and list(cfg.scale) == [1.0, 1.0] and list(cfg.ratio) == [1.0, 1.0]
    transform.transforms = [
        t for t in transform.transforms
        if not (identity_crop and isinstance(t, RandomResizedCropAndInterpolation)) and not isinstance(t, MaybePILToTensor)
    ]
    return transform


def eval_transform_is_identity(cfg: Config, image_size: int) -> bool:
    """timm's evaluation transform resizes to ``img_size / crop_pct`` and crops
    the centre ``img_size``: on square images of that size already (CIFAR at
    32, the digits as served) it returns them unchanged."""
    return cfg.img_size == image_size and math.floor(cfg.img_size / cfg.crop_pct) == cfg.img_size


class NormalizingCollate:
    """Stacks a batch of uint8 ``[H, W, C]`` images into ``[B, C, H, W]`` and
    normalises it in one go.

    The numbers are exactly those of the per-image ``ToTensor`` + ``Normalize``
    (the same float32 operations, broadcast over the batch), for a fraction of
    their cost: converting each image to a tensor took a sixth of a worker's
    time. Called with one ``(images, labels)`` batch instead of a list of
    samples, it converts that batch.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, samples):
        if isinstance(samples, tuple):  # a whole batch looked up at once
            images, labels = samples
        else:
            images = np.stack([image for image, _ in samples])
            labels = np.array([label for _, label in samples], dtype=np.int64)
        chw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        return chw.to(torch.float32).div_(255).sub_(self.mean).div_(self.std), torch.from_numpy(labels)


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    eval_name: str  # "test" or "val": which set picks the best checkpoint


def build_datasets(cfg: Config) -> Splits:
    """Training set and the evaluation set (test set, or ``val_size`` held out of training)."""
    images, labels = read_split(cfg, train=True)
    train_tf, eval_tf = build_transforms(cfg, True, image_size=square_size(images)), build_eval_transform(cfg, images)
    if cfg.val_size:
        if cfg.val_size >= len(labels):
            raise DataError(f"val_size {cfg.val_size} must be smaller than the {len(labels)} training images")
        order = np.random.default_rng(cfg.seed).permutation(len(labels))
        val, keep = order[: cfg.val_size], np.sort(order[cfg.val_size:])
        val = np.sort(val)
        return Splits(
            ArrayImageDataset(images[keep], labels[keep], train_tf, cfg.seed),
            ArrayImageDataset(images[val], labels[val], eval_tf),
            "val",
        )
    test_images, test_labels = read_split(cfg, train=False)
    return Splits(ArrayImageDataset(images, labels, train_tf, cfg.seed), ArrayImageDataset(test_images, test_labels, eval_tf), "test")


def square_size(images: np.ndarray) -> Optional[int]:
    """The side of ``[n, H, W, C]`` images when they are square."""
    return images.shape[1] if images.shape[1] == images.shape[2] else None


def build_eval_transform(cfg: Config, images: np.ndarray) -> Optional[Callable]:
    """The evaluation transform for ``images``, or None where it would return them unchanged."""
    size = square_size(images)
    return None if size is not None and eval_transform_is_identity(cfg, size) else build_transforms(cfg, False)


def build_test_dataset(cfg: Config) -> Dataset:
    images, labels = read_split(cfg, train=False)
    return ArrayImageDataset(images, labels, build_eval_transform(cfg, images))


MAX_AUTO_WORKERS = 32


def cpu_ids() -> list[int]:
    """The CPUs this process may run on: its affinity mask, which taskset, Slurm
    and the study's parallel runs narrow, or all of them."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this platform
        return list(range(os.cpu_count() or 1))


def available_cpus() -> int:
    return len(cpu_ids())


def resolve_workers(cfg: Config, device_type: str, cpus: Optional[int] = None, local_processes: Optional[int] = None) -> int:
    """Loader workers for ``workers: auto``: on a GPU every CPU core this
    process's share holds but one (the training loop's), as augmentation is
    what limits a fast GPU; on CPU one, since the model's compute needs the
    cores and a CPU step asks for few images. A number in the config is used as
    given (the batches are the same with any number)."""
    if cfg.workers is not None:
        return cfg.workers
    cpus = available_cpus() if cpus is None else cpus
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if local_processes is None else local_processes
    share = max(1, cpus // max(1, local))
    if device_type == "cuda":
        return max(1, min(share - 1, MAX_AUTO_WORKERS))
    return 1 if share > 1 else 0


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world``-th index from ``rank``: evaluation shards without padding or duplicates."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_train_loader(cfg: Config, dataset: Dataset, rank: int = 0, world: int = 1, device_type: str = "cpu") -> DataLoader:
    """Shuffled per epoch from (seed, epoch) alone and augmented per image from
    (seed, epoch, index), so a resumed run sees the same batches; call
    ``loader.sampler.set_epoch(epoch, skip)`` before each epoch."""
    per_rank = len(dataset) // world
    if cfg.batch_size > per_rank:
        raise DataError(f"batch_size {cfg.batch_size} is larger than the {per_rank} training images per process; lower --batch-size")
    order = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    workers = resolve_workers(cfg, device_type)
    return DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=EpochSampler(order), num_workers=workers, drop_last=True,
        collate_fn=NormalizingCollate(cfg.mean, cfg.std), pin_memory=device_type == "cuda", persistent_workers=workers > 0,
    )


def build_eval_loader(cfg: Config, dataset: ArrayImageDataset, rank: int = 0, world: int = 1, device_type: str = "cpu") -> DataLoader:
    """This process's shard of ``dataset`` in order. Images used as stored are
    fetched a whole batch per array lookup in this process (no workers: there
    is no per-image work to share out); otherwise each is transformed by the
    loader's workers."""
    shard = ShardSampler(len(dataset), rank, world)
    collate, pin = NormalizingCollate(cfg.mean, cfg.std), device_type == "cuda"
    if dataset.transform is None:
        batches = BatchSampler(shard, cfg.val_batch_size, drop_last=False)
        return DataLoader(dataset, batch_size=None, sampler=batches, collate_fn=collate, pin_memory=pin)
    workers = resolve_workers(cfg, device_type)
    return DataLoader(
        dataset, batch_size=cfg.val_batch_size, sampler=shard, collate_fn=collate, num_workers=workers,
        pin_memory=pin, persistent_workers=workers > 0,
    )
