"""The loaders every dataset shares: seeded per-sample augmentation, samplers, workers, collates.

The training loader asks for ``(epoch, index)`` pairs (``EpochSampler``), and
the random augmentation of each sample is seeded from (seed, epoch, index)
alone: which worker process draws it, how many workers there are and how many
processes share the data change nothing, so workers can persist across epochs
and a resumed run can start mid-epoch without loading what it skips. Samples
leave the workers as uint8 images (or count frames), and the loaders deliver
them on the run's device, normalised there (``batches``), training batches then randomly
erased there (``reprob``), each step's erasing seeded from (seed, epoch, rank, step). Mixup is
applied in the training loop (``engine``), so switching it off at an epoch really happens, and so is
the input encoding after it; where that draws at random, each batch carries its samples' (epoch, index)
keys (``keyed``), from which it seeds each sample's draws.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info

from ..errors import DataError
from ..runtime import workers_for
from .batches import BatchErasing, DeviceBatches, FramesCollate, ImageCollate, ImageNormalizer
from .registry import dataset_def

if TYPE_CHECKING:
    from ..config import Config


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


class SeededDataset(Dataset):
    """A dataset indexed by ``i``, or by ``(epoch, i)``: then the random transform of sample ``i``
    is seeded from ``(seed, epoch, i)`` and gives the same sample in any process, in any order.

    Subclasses define ``_sample(i)`` (and ``_batch(indices)`` where a whole batch can be
    looked up at once: ``whole_batches``), ``labels`` and ``subset``. ``kind`` says what a
    sample is, which picks the collate: ``"image"`` (uint8 ``[H, W, C]``) or ``"frames"``
    (float ``[T, C, H, W]`` event counts).
    """

    kind = "image"
    labels: np.ndarray

    def __init__(self, transform: Optional[Callable] = None, seed: int = 0):
        self.transform, self.seed = transform, seed

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def whole_batches(self) -> bool:
        return False

    def __getitem__(self, key):
        if isinstance(key, tuple):
            epoch, i = key
            with seeded_generators(f"{self.seed}:{epoch}:{i}"):
                return self._sample(i)
        if isinstance(key, list):
            return self._batch(key)
        return self._sample(key)

    def _sample(self, i: int):
        raise NotImplementedError

    def _batch(self, indices: list):
        raise TypeError("whole batches are served only without a transform")

    def subset(self, indices: np.ndarray, transform: Optional[Callable] = None) -> "SeededDataset":
        raise NotImplementedError


class EpochSampler(Sampler):
    """``(epoch, index)`` pairs in the order of a ``DistributedSampler`` (or timm's repeated-
    augmentation sampler), from ``skip`` samples into the epoch (a mid-epoch resume)."""

    def __init__(self, order: Sampler):
        self.order, self.skip, self.epoch = order, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.order.set_epoch(epoch)
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in itertools.islice(self.order, self.skip, None))

    def __len__(self) -> int:
        return len(self.order)  # a whole epoch: progress counts the skipped batches as done


class ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``: evaluation shards without padding or duplicates."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def keyed(cfg: "Config", training: bool) -> bool:
    """Whether the batches carry their samples' keys: where the run's encoding draws per sample, on them."""
    from ..encodings import encoding_class

    return encoding_class(cfg.encoding).random and (training or cfg.encode_eval)


def batch_steps(dataset: SeededDataset, cfg: "Config") -> tuple[Callable, Optional[ImageNormalizer]]:
    """The collate a worker runs and the normalisation on the device (``data.batches``): images leave the
    workers as uint8 and are normalised on the device, frames are normalised by their collate."""
    if dataset.kind == "frames":
        return FramesCollate(cfg.mean, cfg.std), None
    return ImageCollate(), ImageNormalizer(cfg.mean, cfg.std)


# ------------------------------------------------------------------ datasets and loaders


@dataclass
class Splits:
    train: SeededDataset
    eval: SeededDataset
    eval_name: str  # "test" or "val": which set picks the best checkpoint


def build_datasets(cfg: "Config") -> Splits:
    """Training set and the evaluation set (test set, or ``val_size`` held out of training)."""
    definition = dataset_def(cfg.dataset)
    definition.check_config(cfg)
    train, test = definition.datasets(cfg)
    if not cfg.val_size:
        return Splits(train, test, "test")
    if cfg.val_size >= len(train):
        raise DataError(f"val_size {cfg.val_size} must be smaller than the {len(train)} training samples")
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    val, keep = np.sort(order[: cfg.val_size]), np.sort(order[cfg.val_size:])
    return Splits(train.subset(keep, train.transform), train.subset(val, test.transform), "val")


def build_test_dataset(cfg: "Config") -> SeededDataset:
    definition = dataset_def(cfg.dataset)
    definition.check_config(cfg)
    return definition.datasets(cfg)[1]


def build_train_loader(cfg: "Config", dataset: SeededDataset, rank: int = 0, world: int = 1,
                       device: Union[torch.device, str] = "cpu", workers: Optional[int] = None,
                       channels_last: bool = False) -> DeviceBatches:
    """Shuffled per epoch from (seed, epoch) alone and augmented per sample from
    (seed, epoch, index), so a resumed run sees the same batches; call
    ``loader.sampler.set_epoch(epoch, skip)`` before each epoch. With ``aug_repeats``
    > 1, timm's repeated-augmentation sampler orders the epoch (each image that many
    times per epoch, differently augmented, spread over the processes). Batches come
    out on ``device``, ready for the model (``channels_last`` where the run chose it),
    randomly erased with ``reprob`` > 0 (``batches.BatchErasing``)."""
    per_rank = len(dataset) // world
    if cfg.batch_size > per_rank:
        raise DataError(f"batch_size {cfg.batch_size} is larger than the {per_rank} training samples per process; lower --batch-size")
    if cfg.aug_repeats > 1:
        from timm.data.distributed_sampler import RepeatAugSampler

        order = RepeatAugSampler(dataset, num_replicas=world, rank=rank, shuffle=True, num_repeats=cfg.aug_repeats)
    else:
        order = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    device = torch.device(device)
    workers = workers_for(cfg.workers, device.type) if workers is None else workers  # a run's Runtime gives it
    collate, normalize = batch_steps(dataset, cfg)
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=EpochSampler(order), num_workers=workers, drop_last=True,
        collate_fn=collate, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )
    erase = None
    if cfg.reprob > 0 and normalize is not None:  # images only (validate refuses it for event frames)
        erase = BatchErasing(cfg.reprob, cfg.remode, cfg.recount, cfg.seed, rank)
    return DeviceBatches(loader, device, normalize, channels_last, erase, keys=keyed(cfg, training=True))


def build_eval_loader(cfg: "Config", dataset: SeededDataset, rank: int = 0, world: int = 1,
                      device: Union[torch.device, str] = "cpu", workers: Optional[int] = None,
                      channels_last: bool = False) -> DeviceBatches:
    """This process's shard of ``dataset`` in order, on ``device``. Samples used as
    stored are fetched a whole batch per lookup in this process (no workers: there is
    no per-sample work to share out); otherwise each is transformed by the loader's workers."""
    shard = ShardSampler(len(dataset), rank, world)
    device = torch.device(device)
    (collate, normalize), pin = batch_steps(dataset, cfg), device.type == "cuda"
    if dataset.whole_batches:
        batches = BatchSampler(shard, cfg.val_batch_size, drop_last=False)
        loader = DataLoader(dataset, batch_size=None, sampler=batches, collate_fn=collate, pin_memory=pin)
    else:
        workers = workers_for(cfg.workers, device.type) if workers is None else workers  # a run's Runtime gives it
        loader = DataLoader(
            dataset, batch_size=cfg.val_batch_size, sampler=shard, collate_fn=collate, num_workers=workers,
            pin_memory=pin, persistent_workers=workers > 0,
        )
    return DeviceBatches(loader, device, normalize, channels_last, keys=keyed(cfg, training=False))
