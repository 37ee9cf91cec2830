"""How a batch travels: bytes out of the workers, normalised on the run's device with the per-image numbers."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import functional as TF

from spikedriven.data import DeviceBatches, FramesCollate, ImageCollate, ImageNormalizer
from spikedriven.data.batches import BY_VALUE_BYTES

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def images(n: int, size: int = 32, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), i % 10) for i in range(n)]


def test_small_batches_leave_the_workers_by_value_and_large_ones_as_shared_tensors():
    small_images, labels = ImageCollate()(images(64))  # 196,608 bytes
    assert isinstance(small_images, np.ndarray) and small_images.dtype == np.uint8
    assert small_images.shape == (64, 32, 32, 3) and labels.dtype == np.int64 and list(labels[:3]) == [0, 1, 2]
    n = -(-BY_VALUE_BYTES // (64 * 64 * 3))  # the fewest 64x64 images that make BY_VALUE_BYTES: 86
    assert isinstance(ImageCollate()(images(n - 1, size=64))[0], np.ndarray)
    large_images, labels = ImageCollate()(images(n, size=64))
    assert isinstance(large_images, torch.Tensor) and large_images.dtype == torch.uint8
    assert large_images.shape == (n, 64, 64, 3) and isinstance(labels, np.ndarray)
    # a whole batch looked up at once passes through
    stored = np.zeros((5, 8, 8, 3), np.uint8)
    out, out_labels = ImageCollate()((stored, np.arange(5)))
    assert out is stored and out_labels.dtype == np.int64


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_batch_is_normalised_with_exactly_the_per_image_numbers(channels_last):
    samples = images(7, seed=3)
    batches = DeviceBatches([ImageCollate()(samples)], "cpu", ImageNormalizer(MEAN, STD), channels_last)
    (x, y), = list(batches)
    assert x.dtype == torch.float32 and x.shape == (7, 3, 32, 32) and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for i, (image, label) in enumerate(samples):  # torchvision's ToTensor + Normalize on each image
        expected = TF.normalize(TF.to_tensor(Image.fromarray(image)), MEAN, STD)
        assert torch.equal(x[i], expected) and int(y[i]) == label


def test_frames_arrive_as_their_collate_normalised_them():
    frames = [(np.full((4, 2, 8, 8), float(i)), i) for i in range(3)]
    collated = FramesCollate((0.0, 0.0), (1.0, 1.0))(frames)
    (x, y), = list(DeviceBatches([collated], "cpu"))
    assert x.shape == (3, 4, 2, 8, 8) and torch.equal(x[2], torch.full((4, 2, 8, 8), 2.0)) and y.tolist() == [0, 1, 2]


def test_batches_from_a_worker_equal_those_made_in_the_main_process():
    """By value or in shared memory, out of a worker or not: the same bytes, the same normalised batch."""
    samples = images(40, size=64)  # batches of 20 64x64 images are 245,760 bytes: by value; of 40, 491,520

    def batches(workers: int, batch_size: int) -> list:
        loader = DataLoader(samples, batch_size=batch_size, num_workers=workers, collate_fn=ImageCollate())
        return list(DeviceBatches(loader, "cpu", ImageNormalizer(MEAN, STD)))

    for batch_size in (20, 40):
        here, there = batches(0, batch_size), batches(1, batch_size)
        assert len(here) == len(there) == 40 // batch_size
        assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(here, there))


def test_the_wrapper_answers_for_its_loader():
    loader = DataLoader(images(10), batch_size=4, collate_fn=ImageCollate(), num_workers=0)
    batches = DeviceBatches(loader, "cpu", ImageNormalizer(MEAN, STD))
    assert len(batches) == 3 and batches.sampler is loader.sampler and batches.num_workers == 0
    assert batches.dataset is loader.dataset
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]


def test_iterating_starts_the_loader_at_once_as_the_loader_itself_does():
    """The trainer starts an epoch's loader, then seeds the epoch: the loader's draw of its workers' seed must
    come first, as with a plain loader, or a resumed run's generators would be one draw off."""
    loader = DataLoader(images(8), batch_size=4, collate_fn=ImageCollate(), num_workers=0)
    draws = []
    for iterable in (loader, DeviceBatches(loader, "cpu", ImageNormalizer(MEAN, STD))):
        torch.manual_seed(0)
        iter(iterable)
        draws.append(torch.rand(1))
    assert torch.equal(draws[0], draws[1])


def test_the_normaliser_divides_by_tensors_so_a_gpu_gives_the_cpus_numbers():
    """CUDA divides by a host scalar as a multiplication by its reciprocal, which differs from the division for 126
    of the 256 byte values: every division the normaliser makes takes a tensor divisor, which CUDA divides by.
    (The GPU test compares the two devices' batches bit for bit; this keeps the reason visible on CPU.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    values = torch.arange(256, dtype=torch.float32)
    assert int((values * (1 / torch.tensor(255.0)) != values / torch.tensor(255.0)).sum()) == 126

    divisors = []

    class Divisions(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.div, torch.ops.aten.div_):
                divisors.append(args[1])
            return func(*args, **(kwargs or {}))

    batch = torch.from_numpy(np.stack([image for image, _ in images(2)]))
    with Divisions():
        ImageNormalizer(MEAN, STD)(batch)
    assert len(divisors) == 2 and all(isinstance(d, torch.Tensor) for d in divisors)
