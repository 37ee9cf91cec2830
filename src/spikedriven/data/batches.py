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
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

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
    (None: frames, normalised by their collate), channels-last where asked. Arrays are pinned before the copy
    on a GPU (tensors from workers arrive pinned by the loader), so the copy does not make the host wait.

    ``sampler``, ``dataset``, ``num_workers`` and ``len()`` are the loader's."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: Union[torch.device, str],
                 normalize: Optional[ImageNormalizer] = None, channels_last: bool = False):
        self.loader, self.device = loader, torch.device(device)
        self.normalize, self.channels_last = normalize, channels_last

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
        return self._on_device(iter(self.loader))

    def _on_device(self, batches):
        for images, labels in batches:
            images, labels = self._to_device(images), self._to_device(labels)
            if self.normalize is not None:
                images = self.normalize(images, self.channels_last)
            yield images, labels
