"""How a batch travels from the loader's workers to the model.

Workers stack samples into a batch (the collates) and hand it on unconverted: images as uint8
``[B, H, W, C]``, a quarter of float32's bytes. ``DeviceBatches`` copies each batch to the run's device
(from pinned memory, without waiting for the GPU) and there converts and normalises the images, so in a
GPU run the GPU does the per-element work and the main process only receives and forwards batches.

The main process is what a fast GPU waits on: it receives every batch of every worker. A tensor leaving a
worker travels in a shared-memory segment of its own, which costs the main process about 0.35 ms per
tensor whatever its size, while an array pickled through the worker's pipe costs in proportion to its
bytes. Measured on this project's CPU with a loader of CIFAR batches of 64 (``benchmarks/loader_transfer.py``):
float32 image and label tensors took 1.0 ms of the main process per batch, uint8 images and labels
by value 0.21 ms. By value loses above about 1 MiB (ImageNet batches), so larger images keep their segment.

Training batches may then be randomly erased there (``BatchErasing``), as timm's GPU prefetcher erases them:
normalised, before the training loop mixes them (mixup).

Where the run's input encoding draws at random, each batch also carries its samples' keys ``[B, 2]`` (epoch,
index) as a third element, from which the encoding seeds each sample's draws (``encodings``); a caller that reads
``batch[0], batch[1]`` sees no difference.
"""

from __future__ import annotations

import contextlib
import random
from typing import Optional, Sequence, Union

import numpy as np
import torch
from timm.data.random_erasing import RandomErasing

# batches of fewer image bytes than this leave a worker by value (pickled), larger ones in shared memory
BY_VALUE_BYTES = 2**20


class ImageCollate:
    """Stacks uint8 ``[H, W, C]`` images into one uint8 ``[B, H, W, C]`` batch with int64 labels. Called with
    one ``(images, labels)`` batch looked up at once, it passes that on."""

    def __call__(self, samples):
        if isinstance(samples, tuple):  # a whole batch looked up at once
            images, labels = samples
        else:
            images = np.stack([image for image, _ in samples])
            labels = np.array([label for _, label in samples], dtype=np.int64)
        images = np.ascontiguousarray(images)
        return (images if images.nbytes < BY_VALUE_BYTES else torch.from_numpy(images)), np.asarray(labels, np.int64)


class ImageNormalizer:
    """uint8 ``[B, H, W, C]`` images to float32 ``[B, C, H, W]`` as ``(x / 255 - mean) / std``, on the
    images' device: exactly the numbers of per-image ``ToTensor`` + ``Normalize`` (the same float32
    operations, broadcast over the batch)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __call__(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        device = images.device
        if device not in self._constants:
            # 255 as a tensor on the device, not a Python number: CUDA divides by a host scalar as a multiplication
            # by its reciprocal, which can differ from the division in the last bit; by a tensor it divides, as
            # the CPU does (float32 division is correctly rounded on both)
            self._constants[device] = (torch.tensor(255.0, device=device), self.mean.to(device), self.std.to(device))
        scale, mean, std = self._constants[device]
        # [B, H, W, C] seen as [B, C, H, W] is already channels-last, and each operation below keeps that layout
        chw = images.permute(0, 3, 1, 2)
        if not channels_last:
            chw = chw.contiguous()  # on the uint8 bytes: a quarter of what a float copy would move
        return chw.div(scale).sub_(mean).div_(std)


class BatchErasing:
    """timm's ``RandomErasing`` on a normalised training batch ``[B, C, H, W]``, in place on its device: each image,
    with probability ``probability``, gets 1 to ``count`` boxes filled per ``mode`` (const: 0, the mean colour once
    normalised; rand: one normal colour per box; pixel: normal noise).

    timm draws the boxes from Python's ``random`` and the fills from torch's generator of the batch's device, the
    main process's global generators. Left there, a step's erasing would depend on every draw made before it
    (mixup's, the model's, the evaluation's) and turning erasing on would shift all of those. So each step draws
    from those generators reseeded from (seed, epoch, rank, step) alone, and they are restored afterwards: the
    erasing of a batch is fixed by which batch it is, as the batch itself is (the sampler orders it from (seed,
    epoch), its images are augmented from (seed, epoch, index)), with any number of loader workers and after a
    resume mid-epoch, and the other draws of the run are those of a run without erasing. Per step rather than
    per image: the batch on the device no longer carries its images' indices, and one reseed per batch is cheap."""

    def __init__(self, probability: float, mode: str, count: int, seed: int, rank: int = 0):
        self.probability, self.mode, self.count = probability, mode, count
        self.seed, self.rank = seed, rank
        self._erasers: dict[torch.device, RandomErasing] = {}

    def __call__(self, images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        device = images.device
        if device not in self._erasers:  # timm makes its fills on the device it is given: the batch's
            self._erasers[device] = RandomErasing(probability=self.probability, mode=self.mode,
                                                  max_count=self.count, device=str(device))
        with _generators_seeded(f"erasing:{self.seed}:{epoch}:{self.rank}:{step}", device):
            return self._erasers[device](images)


@contextlib.contextmanager
def _generators_seeded(key: str, device: torch.device):
    """Python's generator and torch's for the CPU and ``device`` seeded from ``key``, their states restored after."""
    python_state = random.getstate()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):  # saves and restores the CPU's and these
        random.seed(key)  # a str seeds through SHA-512: the same on every platform and run
        derived = random.getrandbits(63)
        torch.default_generator.manual_seed(derived)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(derived)
        try:
            yield
        finally:
            random.setstate(python_state)


class FramesCollate:
    """Stacks event frames ``[T, C, H, W]`` into the model's 5-D input ``[B, T, C, H, W]``, normalised per channel
    (mean 0, std 1, the DVS configs' values, leave the counts as they are). Event counts are float, often above
    255: they travel as float32."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.identity = all(m == 0 for m in mean) and all(s == 1 for s in std)

    def __call__(self, samples):
        frames = torch.stack([torch.as_tensor(f) for f, _ in samples]).to(torch.float32)
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return (frames if self.identity else frames.sub_(self.mean).div_(self.std)), labels


class DeviceBatches:
    """The batches of ``loader`` as the model takes them: on ``device``, images normalised by ``normalize``
    (None: frames, normalised by their collate), channels-last where asked, then randomly erased by ``erase``
    (training batches only). Arrays are pinned before the copy on a GPU (tensors from workers arrive pinned by
    the loader), so the copy does not make the host wait.

    ``sampler``, ``dataset``, ``num_workers`` and ``len()`` are the loader's; with ``erase`` the sampler is an
    ``EpochSampler``, which says the epoch and where in it the pass starts.

    ``keys``: each batch is ``(images, labels, keys)``, keys ``[B, 2]`` int64 on ``device``: each sample's (epoch,
    index), the epoch ``EVAL_EPOCH`` for samples the sampler gives by index alone (evaluation). They are read from a
    second pass over the loader's batch sampler: the samplers order a pass from their state alone (seed, epoch,
    skip, set before a pass starts), and the loader delivers batches in its sampler's order whatever its workers,
    so the two passes agree batch for batch without the workers or the datasets carrying anything more."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: Union[torch.device, str],
                 normalize: Optional[ImageNormalizer] = None, channels_last: bool = False,
                 erase: Optional[BatchErasing] = None, keys: bool = False):
        self.loader, self.device = loader, torch.device(device)
        self.normalize, self.channels_last, self.erase = normalize, channels_last, erase
        self.keys = keys

    @property
    def sampler(self):
        return self.loader.sampler

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def num_workers(self) -> int:
        return self.loader.num_workers

    def __len__(self) -> int:
        return len(self.loader)

    def _to_device(self, value) -> torch.Tensor:
        tensor = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        if self.device.type == "cuda" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def __iter__(self):
        # the loader's iterator starts here, as iter(loader) starts it (it draws its workers' seed from torch's
        # generator then, before the trainer seeds the epoch), not at the first batch
        epoch, first_step = 0, 0
        if self.erase is not None:  # the pass's place, read as it starts: its first batch is step skip / batch
            epoch, first_step = self.sampler.epoch, self.sampler.skip // self.loader.batch_size
        batches = iter(self.loader)
        return self._on_device(batches, epoch, first_step, self._sample_keys() if self.keys else None)

    def _sample_keys(self):
        from ..encodings import EVAL_EPOCH

        order = self.loader.batch_sampler if self.loader.batch_sampler is not None else self.loader.sampler
        for indices in order:
            pairs = [key if isinstance(key, tuple) else (EVAL_EPOCH, key) for key in indices]
            yield torch.tensor(pairs, dtype=torch.int64)

    def _on_device(self, batches, epoch: int, first_step: int, keys=None):
        for step, (images, labels) in enumerate(batches, start=first_step):
            images, labels = self._to_device(images), self._to_device(labels)
            if self.normalize is not None:
                images = self.normalize(images, self.channels_last)
            if self.erase is not None:
                images = self.erase(images, epoch, step)
            if keys is None:
                yield images, labels
            else:
                yield images, labels, self._to_device(next(keys))
