"""Training end to end on tiny generated CIFAR-format data, resume, torchrun, schedule."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
import torch

from spikedriven.engine import checkpoint as ckpt_io
from spikedriven.engine import recipe
from spikedriven.engine.resume import is_behind
from spikedriven.cli import main
from spikedriven.config import load_config
from spikedriven.models import build_model
from spikedriven.testing import write_fake_cifar

from helpers import DEMO, TINY_RUN, assert_same_run, read_summary, stop_after_steps

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar(root, "torch/cifar10", n_train=50, n_test=20, seed=1)
    write_fake_cifar(root, "torch/cifar100", n_train=48, n_test=20, seed=2)
    return root


def test_generated_data_is_what_torchvision_reads(cifar_root, monkeypatch):
    import numpy as np
    import torchvision
    import torchvision.datasets.cifar as tv_cifar

    from spikedriven.data import read_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # generated files have other MD5s
    for cls, name in ((torchvision.datasets.CIFAR10, "torch/cifar10"), (torchvision.datasets.CIFAR100, "torch/cifar100")):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
        for train in (True, False):
            ref = cls(str(cifar_root), train=train)
            images, labels = read_cifar(name, cifar_root, train)
            assert np.array_equal(ref.data, images) and list(ref.targets) == labels.tolist()


@pytest.mark.parametrize("dataset, mode", [("cifar10", "lif"), ("cifar100", "if_soft")])
def test_study_command_line_writes_a_complete_run_folder(cifar_root, tmp_path, dataset, mode, run_curves_drawn):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "-c", str(ROOT / f"conf/{dataset}/2_256_300E_t4.yml"),
           "--model", "sdt", "--spike-mode", mode, "--data-dir", str(cifar_root), "--output", str(out), *TINY_RUN]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "summary.csv", "curves.png", "log.txt", "last.pth.tar", "best.pth.tar", "results.json"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    rows = read_summary(out)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "eval_loss", "eval_top1", "eval_top5", "train_seconds",
                             "epoch_seconds", "images_per_s", "mean_firing_rate"]
    assert all(math.isfinite(float(r["train_loss"])) and 0 <= float(r["eval_top1"]) <= 100 for r in rows)

    cfg = load_config(out / "config.yaml")
    assert cfg.spike_mode == mode and cfg.model_settings()["embed_dim"] == 32 and cfg.num_classes == (10 if dataset == "cifar10" else 100)
    ckpt = ckpt_io.read_checkpoint(out / "last.pth.tar")
    assert ckpt["config"] == cfg.to_dict() and ckpt["epoch"] == 2 and ckpt["model_args"]["neuron"]["mode"] == mode
    ckpt_io.load_checkpoint(build_model(cfg), out / "best.pth.tar")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/lr", "train/train_loss", "test/eval_top1"} <= set(tags)
    assert any(t.startswith("firing_rate/block.0.attn.q_neuron") for t in tags)


def _run(args, monkeypatch=None):
    return main(["train", *args])


# 12 steps an epoch: stop after the last step of epoch 0, or after step 6 of epoch 1
@pytest.mark.parametrize("stop_after, epoch, step", [(12, 0, 12), (18, 1, 6)], ids=["epoch-boundary", "mid-epoch"])
def test_resume_continues_exactly(cifar_root, tmp_path, monkeypatch, stop_after, epoch, step):
    """A run stopped (epoch boundary or mid-epoch) and resumed ends bitwise equal to an uninterrupted one."""
    args = ["-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root), *TINY_RUN,
            "--epochs", "3", "--batch-size", "4"]
    assert _run([*args, "--output", str(tmp_path / "whole")]) == 0

    stop_after_steps(monkeypatch, stop_after)
    interrupted = tmp_path / "interrupted"
    code = _run([*args, "--output", str(interrupted)])
    assert code == 128 + 2  # stopped as if by SIGINT (the flag carries no signal number)
    ckpt = ckpt_io.read_checkpoint(interrupted / "last.pth.tar")
    assert ckpt["rng"] is not None and (ckpt["epoch"], ckpt["step"]) == (epoch, step)
    assert len(read_summary(interrupted)) == epoch
    monkeypatch.undo()
    assert _run(["--resume", str(interrupted / "last.pth.tar")]) == 0
    assert_same_run(tmp_path / "whole", interrupted)


class _Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no handler sees it."""


def test_resume_after_a_kill_between_best_and_last_writes(cifar_root, tmp_path, monkeypatch):
    """An improving epoch writes best.pth.tar, then last.pth.tar; a kill between the two
    leaves best the newer. Resuming from it must leave last.pth.tar holding the final state."""
    args = ["-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root), *TINY_RUN, "--epochs", "1"]
    assert _run([*args, "--output", str(tmp_path / "whole")]) == 0

    save = ckpt_io.save_checkpoint

    def killed_at_last(path, payload):
        if Path(path).name == "last.pth.tar":
            raise _Killed
        return save(path, payload)

    monkeypatch.setattr(ckpt_io, "save_checkpoint", killed_at_last)
    crashed = tmp_path / "crashed"
    with pytest.raises(_Killed):
        _run([*args, "--output", str(crashed)])
    monkeypatch.undo()
    assert {p.name for p in crashed.glob("*.pth.tar")} == {"best.pth.tar"}  # epoch 0 always improves
    assert _run([*args, "--output", str(crashed), "--resume", "auto"]) == 0
    assert_same_run(tmp_path / "whole", crashed)


def test_is_behind_compares_progress(tmp_path):
    state = {"state_dict": {"w": torch.zeros(1)}}
    ckpt_io.save_checkpoint(tmp_path / "a.pth.tar", {**state, "epoch": 3, "step": 5})
    (tmp_path / "broken.pth.tar").write_bytes(b"not a checkpoint")
    assert is_behind(tmp_path / "a.pth.tar", {"epoch": 3, "step": 6})
    assert is_behind(tmp_path / "a.pth.tar", {"epoch": 4, "step": 0})
    assert not is_behind(tmp_path / "a.pth.tar", {"epoch": 3, "step": 5})
    assert not is_behind(tmp_path / "a.pth.tar", {"epoch": 2, "step": 9})  # never overwrite newer progress
    assert is_behind(tmp_path / "missing.pth.tar", {"epoch": 0})
    assert is_behind(tmp_path / "broken.pth.tar", {"epoch": 0})


def test_a_run_does_not_depend_on_the_number_of_loader_workers(cifar_root, tmp_path):
    args = ["-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root), *TINY_RUN]
    assert _run([*args, "--output", str(tmp_path / "w0")]) == 0
    assert _run([*args, "--workers", "2", "--output", str(tmp_path / "w2")]) == 0
    assert_same_run(tmp_path / "w0", tmp_path / "w2")


def test_no_resume_opt_loads_weights_into_a_new_run(cifar_root, tmp_path):
    args = ["-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root), *TINY_RUN, "--epochs", "1"]
    assert _run([*args, "--output", str(tmp_path / "a")]) == 0
    assert _run([*args, "--output", str(tmp_path / "b"), "--resume", str(tmp_path / "a" / "last.pth.tar"), "--no-resume-opt"]) == 0
    assert [r["epoch"] for r in read_summary(tmp_path / "b")] == ["0"]


def test_torchrun_two_processes_gloo(cifar_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "spikedriven",
           "train", "-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root),
           "--output", str(out), *TINY_RUN, "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_summary(out)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    # every test image counted once across both ranks
    assert "20 test images" in (out / "log.txt").read_text()
    assert (out / "last.pth.tar").exists()


def test_torchrun_ranks_reduce_accuracy_and_firing_rates_over_every_sample(tmp_path):
    """Each rank evaluates half the test set; what the run logs is what one process measures on the whole."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "spikedriven",
           "train", "-c", DEMO, "--output", str(out), "--epochs", "2", "--warmup-epochs", "0", "--cooldown-epochs", "0",
           "--embed-dim", "16", "--num-heads", "2", "--workers", "0", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["eval", "--checkpoint", str(out / "last.pth.tar"), "--eval-output", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert float(read_summary(out)[-1]["eval_top1"]) == pytest.approx(metrics["top1"])
    logged = float(re.findall(r"epoch 1 \|.*mean firing rate (\d\.\d{4})", (out / "log.txt").read_text())[0])
    assert logged > 0 and logged == round(metrics["mean_firing_rate"], 4)


def test_a_compiled_run_evaluates_its_compiled_model_and_logs_what_the_eager_model_measures(tmp_path, monkeypatch):
    """With compile on, the per-epoch evaluation runs the compiled model (the neurons count their spikes inside
    its graph), once per mode, not once per epoch; its top-1 and firing rate are what `spikedriven eval`
    measures on the eager model. (aot_eager: dynamo's graphs without inductor, which the GPU session checks.)"""
    import torch._dynamo

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: real_compile(model, backend="aot_eager"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = tmp_path / "compiled"
    assert main(["train", "-c", DEMO, "--output", str(out), "--epochs", "2", "--warmup-epochs", "0", "--cooldown-epochs",
                 "0", "--embed-dim", "16", "--num-heads", "2", "--workers", "0", "--device", "cpu", "--compile", "true",
                 "--compile-mode", "default"]) == 0
    stats = torch._dynamo.utils.counters["stats"]
    # train and eval; the partial last evaluation batch (360 = 2 x 128 + 104) runs on the eager model
    assert not torch._dynamo.utils.counters["graph_break"] and stats["unique_graphs"] == 2
    torch._dynamo.reset()
    assert main(["eval", "--checkpoint", str(out / "last.pth.tar"), "--eval-output", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert float(read_summary(out)[-1]["eval_top1"]) == pytest.approx(metrics["top1"])
    logged = float(re.findall(r"epoch 1 \|.*mean firing rate (\d\.\d{4})", (out / "log.txt").read_text())[0])
    assert logged > 0 and logged == round(metrics["mean_firing_rate"], 4)


def test_lr_schedule_matches_the_study_epoch_by_epoch():
    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml", {"embed_dim": 32, "depth": 1})
    optimizer, scheduler, total = recipe.build_optimizer_and_scheduler(cfg, build_model(cfg))
    assert total == 310
    for t in range(total):
        scheduler.step(t)
        if t < 20:
            expected = 1e-6 + t * (3e-4 - 1e-6) / 20
        elif t < 300:
            expected = 1e-5 + 0.5 * (3e-4 - 1e-5) * (1 + math.cos(math.pi * t / 300))
        else:
            expected = 1e-5
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9), t
    decays = sorted(g["weight_decay"] for g in optimizer.param_groups)
    assert decays == [0.0, 0.06]
    no_decay = next(g for g in optimizer.param_groups if g["weight_decay"] == 0.0)
    assert all(p.dim() <= 1 for p in no_decay["params"])  # biases and norm weights only


def test_mixup_switches_off_at_its_epoch(monkeypatch):
    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml")
    seen = {}
    for epoch in (199, 200):
        on = cfg.mixup_off_epoch == 0 or epoch < cfg.mixup_off_epoch
        mixup, loss = recipe.make_mixup_and_loss(cfg, on, torch.device("cpu"))
        seen[epoch] = (mixup is not None, type(loss).__name__)
    assert seen == {199: (True, "SoftTargetCrossEntropy"), 200: (False, "LabelSmoothingCrossEntropy")}


def test_held_out_validation_split(cifar_root, tmp_path):
    out = tmp_path / "val"
    args = ["-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root), *TINY_RUN,
            "--epochs", "1", "--val-size", "10", "--output", str(out)]
    assert _run(args) == 0
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["eval_set"] == "val" and "best_test_top1" in results and "final_test_top1" in results
    assert "40 train / 10 val images" in (out / "log.txt").read_text()


def test_engine_options_tet_clipping_channels_last_bf16(cifar_root, tmp_path):
    out = tmp_path / "options"
    args = ["-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root), *TINY_RUN,
            "--epochs", "1", "--tet", "true", "--clip-grad", "1.0", "--channels-last", "true", "--amp", "bf16",
            "--output", str(out)]
    assert _run(args) == 0
    rows = read_summary(out)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_loss"]))
    cfg = load_config(out / "config.yaml")
    assert cfg.tet and cfg.clip_grad == 1.0 and cfg.channels_last and cfg.amp == "bf16"


def test_tet_loss_averages_the_per_step_losses():
    from spikedriven.engine.loop import TETLoss, classification_loss

    logits = torch.randn(3, 5, 4)
    target = torch.randint(0, 4, (5,))
    ce = torch.nn.functional.cross_entropy
    expected = sum(ce(logits[t], target) for t in range(3)) / 3
    torch.testing.assert_close(classification_loss(logits, target, TETLoss(ce)), expected)


def test_per_step_output_is_the_models_declaration_seen_through_its_wrappers():
    """The loop and the evaluation ask the model whether it returns per-step logits (a model built with tet),
    through a compiled model's or torchrun's wrapper, rather than guessing from the logits' rank."""
    from spikedriven.engine.loop import evaluate, per_step_output
    from spikedriven.models import SpikeDrivenTransformer

    from helpers import tiny_model_kwargs

    plain, tet = (SpikeDrivenTransformer(**tiny_model_kwargs(tet=flag)) for flag in (False, True))
    assert not per_step_output(plain) and per_step_output(tet)

    class Wrapper(torch.nn.Module):  # as DistributedDataParallel holds its model
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert per_step_output(Wrapper(tet)) and not per_step_output(Wrapper(plain))
    # the evaluation scores a tet model on its per-step logits' mean
    torch.manual_seed(0)
    batch = [(3 * torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))]
    tet.eval()
    with torch.no_grad():
        mean_logits = tet(batch[0][0]).mean(0)
    expected = torch.nn.functional.cross_entropy(mean_logits, batch[0][1]).item()
    assert evaluate(tet, batch, torch.device("cpu"))["eval_loss"] == pytest.approx(expected, rel=1e-6)


def test_lean_backward_memory_trains_exactly_like_full(cifar_root, tmp_path):
    """--backward-memory lean (bool spikes, recomputed batch norm + neuron) and min (also recomputed
    convolutions) change no number of a run."""
    args = ["-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(cifar_root), *TINY_RUN,
            "--spike-mode", "if_soft"]
    for memory in ("full", "lean", "min"):
        assert _run([*args, "--backward-memory", memory, "--output", str(tmp_path / memory)]) == 0
    for memory in ("lean", "min"):
        assert load_config(tmp_path / memory / "config.yaml").backward_memory == memory
        assert_same_run(tmp_path / "full", tmp_path / memory)


def test_randaugment_posterize_at_top_magnitude_gives_black_not_an_error():
    """The study's RandAugment reaches 0-bit posterize; Pillow 13 raises there, which would end a run."""
    import numpy as np
    from PIL import Image

    from spikedriven.data import build_transforms

    transform = build_transforms(load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml"), train=True)
    ops = [op for t in transform.transforms for op in getattr(t, "ops", []) if op.name == "PosterizeIncreasing"]
    assert len(ops) == 1
    op = ops[0]
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0.0  # the top magnitude: keep 0 bits
    img = Image.fromarray(np.random.default_rng(0).integers(1, 255, (32, 32, 3), dtype=np.uint8))
    out = np.asarray(op(img))
    assert out.shape == (32, 32, 3) and not out.any()
    op.magnitude = 5  # keep 2 bits: an ordinary posterize
    assert not (np.asarray(op(img)) & 0b00111111).any() and np.asarray(op(img)).any()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_normalisation_equals_per_image_transform(cifar_root, train):
    """uint8 images normalised per batch give exactly the per-image ToTensor + Normalize numbers."""
    import random

    from spikedriven.data import ImageCollate, ImageNormalizer, build_datasets, build_transforms

    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml", {"data_dir": str(cifar_root)})
    splits = build_datasets(cfg)
    dataset = splits.train if train else splits.eval
    reference = build_transforms(cfg, train, normalize=True, image_size=32)
    collate, normalize = ImageCollate(), ImageNormalizer(cfg.mean, cfg.std)
    import numpy as np

    def seed(i):  # timm's augmentations draw from all three generators
        random.seed(i), np.random.seed(i), torch.manual_seed(i)

    for i in range(12):
        seed(i)
        image, label = dataset[i]
        assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
        seed(i)
        expected = reference(Image.fromarray(dataset.images[i]))
        images, labels = collate([(image, label)])
        assert images.dtype == np.uint8 and images.shape == (1, 32, 32, 3)  # the workers hand on bytes
        for channels_last in (False, True):
            batch = normalize(torch.from_numpy(images), channels_last)
            assert torch.equal(batch[0], expected) and int(labels[0]) == label
            assert batch.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
