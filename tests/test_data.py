"""The loaders: augmentation seeded per image, so batches do not depend on workers or resumes; how many
workers auto gives; evaluation batches looked up whole where the transform is an identity."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedriven.config import load_config
from spikedriven.data import (
    build_datasets, build_eval_loader, build_train_loader, build_transforms,
)
from spikedriven.errors import ConfigError
from spikedriven.testing import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, "torch/cifar10", n_train=48, n_test=8, seed=5)
    return root


def _loader(data_dir, workers, world=1, rank=0):
    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml",
                      {"data_dir": str(data_dir), "workers": workers, "batch_size": 6, "seed": 7})
    return build_train_loader(cfg, build_datasets(cfg).train, rank=rank, world=world)


def _epoch(loader, epoch, skip=0):
    loader.sampler.set_epoch(epoch, skip=skip)
    return [images for images, _ in loader]


def test_batches_do_not_depend_on_the_number_of_workers(data_dir):
    in_process, two_workers = _loader(data_dir, 0), _loader(data_dir, 2)
    for epoch in (0, 3, 0):  # persistent workers: later epochs reuse the same processes
        a, b = _epoch(in_process, epoch), _epoch(two_workers, epoch)
        assert len(a) == len(b) == len(in_process.dataset) // 6
        assert all(torch.equal(x, y) for x, y in zip(a, b)), epoch
    # the augmentation is random: another epoch draws other transforms for the same images
    assert not all(torch.equal(x, y) for x, y in zip(_epoch(in_process, 0), _epoch(in_process, 1)))


def test_loading_in_the_main_process_leaves_its_generators_alone(data_dir):
    dataset = _loader(data_dir, 0).dataset
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    for i in range(10):
        dataset[(0, i)]
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # mixup draws as if nothing was loaded


def test_a_skipped_start_gives_the_rest_of_the_epoch(data_dir):
    loader = _loader(data_dir, 2)
    whole = _epoch(loader, 2)
    rest = _epoch(loader, 2, skip=3 * 6)
    assert len(rest) == len(whole) - 3 and all(torch.equal(x, y) for x, y in zip(whole[3:], rest))
    assert len(_epoch(loader, 2)) == len(whole)  # the next set_epoch starts from the beginning again


def test_each_image_is_augmented_alike_on_every_rank(data_dir):
    """Two processes of a distributed run see disjoint halves, each image transformed as on one process."""
    single = _loader(data_dir, 0).dataset
    for rank in (0, 1):
        loader = _loader(data_dir, 0, world=2, rank=rank)
        loader.sampler.set_epoch(4)
        keys = list(loader.sampler)
        assert len(keys) == len(single) // 2 and all(epoch == 4 for epoch, _ in keys)
        for key in keys[:5]:
            assert np.array_equal(loader.dataset[key][0], single[key][0])


def test_workers_refuses_what_is_neither_a_count_nor_auto():
    for bad, words in (("many", "an integer or auto"), (-1, ">= 0 or auto"), (2.5, "an integer or auto")):
        with pytest.raises(ConfigError, match=words):
            load_config(None, {"workers": bad})


@pytest.mark.parametrize("conf", ["conf/cifar10/2_256_300E_t4.yml", "conf/digits/demo.yml"])
def test_evaluation_batches_equal_the_per_image_transform(data_dir, conf):
    """Where timm's evaluation transform is an identity, whole batches are looked up as stored: the same
    tensors, batch for batch and shard for shard, as transforming each image."""
    cfg = load_config(ROOT / conf, {"data_dir": str(data_dir), "val_batch_size": 3, "workers": 0})
    batched = build_datasets(cfg).eval
    assert batched.transform is None
    per_image = type(batched)(batched.images, batched.labels, build_transforms(cfg, False))
    for rank in (0, 1):
        fast = list(build_eval_loader(cfg, batched, rank=rank, world=2))
        reference = list(build_eval_loader(cfg, per_image, rank=rank, world=2))
        assert [x.shape[0] for x, _ in fast] == [x.shape[0] for x, _ in reference]
        for (x, y), (x_ref, y_ref) in zip(fast, reference):
            assert x.dtype == torch.float32 and x.is_contiguous()
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize("change", [{"crop_pct": 0.875}, {"img_size": 40}])
def test_evaluation_transforms_each_image_where_it_changes_them(data_dir, change):
    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml", {"data_dir": str(data_dir), "workers": 0, **change})
    dataset = build_datasets(cfg).eval
    assert dataset.transform is not None
    images, _ = next(iter(build_eval_loader(cfg, dataset)))
    assert images.shape[-1] == cfg.img_size


def test_the_crop_left_out_of_training_returns_the_image_unchanged():
    """scale = ratio = [1, 1] at the stored size: timm's random-resized crop is an identity, so the study's
    pipeline leaves it out (it costs a tenth of a worker's time); at another size it stays and resizes."""
    from PIL import Image
    from timm.data.transforms import RandomResizedCropAndInterpolation

    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml")
    full = build_transforms(cfg, True, image_size=None)
    (crop,) = [t for t in full.transforms if isinstance(t, RandomResizedCropAndInterpolation)]
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        random.seed(i)
        assert np.array_equal(np.asarray(crop(Image.fromarray(image))), image)
    assert not any(isinstance(t, RandomResizedCropAndInterpolation) for t in build_transforms(cfg, True, image_size=32).transforms)
    bigger = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml", {"img_size": 40})
    assert any(isinstance(t, RandomResizedCropAndInterpolation) for t in build_transforms(bigger, True, image_size=32).transforms)
