"""End-to-end benchmark: the study's augmentation and loaders, training epochs and
an evaluation, on a generated CIFAR-format set (no download).

    python benchmarks/end_to_end.py --train-images 50000 --test-images 10000   # workers: auto, as a run
    python benchmarks/end_to_end.py --quick        # small, CPU
    python benchmarks/end_to_end.py --data-only --workers 2 --train-images 10000   # the loader alone
    python benchmarks/end_to_end.py --data-only --eval-per-image ...   # evaluation images transformed one by one

Prints images/s for the data pipeline alone (its second pass: the first also starts the loader's
workers, timed as ``data_first_pass_s``) and for the last of ``--epochs``
training epochs and its evaluation (the first epoch also compiles under the
default ``--compile auto`` on CUDA; its time is reported separately), and
writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from spikedriven.config import Config, load_config
from spikedriven.data import build_datasets, build_eval_loader, build_train_loader, build_transforms
from spikedriven.engine.distributed import DistInfo, resolve_device
from spikedriven.engine.loop import StepOptions, evaluate, train_one_epoch
from spikedriven.engine.recorder import SpikeRecorder
from spikedriven.spike_ops import MEMORY_MODES
from spikedriven.testing import write_fake_cifar
from spikedriven.engine.recipe import build_optimizer_and_scheduler, make_mixup_and_loss
from spikedriven.engine.rng import seed_everything
from spikedriven.engine.trainer import compile_model, place_model
from spikedriven.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
# --quick: a few hundred images through a small model on the CPU
QUICK_SIZES = dict(train_images=256, test_images=128, workers=2, batch=32)
QUICK_OVERRIDES = dict(embed_dim=32, depth=1, time_steps=2, device="cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


STUDY_CONFIG = ROOT / "conf/cifar10/2_256_300E_t4.yml"


@dataclass
class TrainingSetup:
    """What the training command builds before its first step, with every "auto" decided as a run decides it."""

    cfg: Config
    runtime: Runtime
    model: torch.nn.Module  # eager, as checkpoints save it
    train_model: torch.nn.Module  # what the steps and the per-epoch evaluation run: compiled where the runtime chose it
    optimizer: torch.optim.Optimizer
    mixup: object
    loss_fn: object

    def train_epoch(self, batches, epoch: int = 0, sync_every: int = 50) -> dict:
        options = StepOptions(device=self.runtime.device, amp=self.cfg.amp, sync_every=sync_every,
                              cuda_graphs=self.runtime.cuda_graphs)
        return train_one_epoch(self.train_model, batches, self.optimizer, self.loss_fn, options, epoch=epoch,
                               mixup=self.mixup)

    def evaluate(self, batches) -> dict:
        """The per-epoch evaluation as a run does it: the compiled model, counting its spikes."""
        recorder = SpikeRecorder(self.train_model)
        metrics = evaluate(self.train_model, batches, self.runtime.device, amp=self.cfg.amp, recorders=(recorder,),
                           cuda_graphs=self.runtime.cuda_graphs)
        metrics["firing_rate"] = recorder.firing_rates(DistInfo())[1]
        return metrics


def study_config(overrides: dict) -> Config:
    """The study's CIFAR-10 command (``-c conf/cifar10/2_256_300E_t4.yml --spike-mode if_soft``) with ``overrides``."""
    return load_config(STUDY_CONFIG, {"spike_mode": "if_soft", **overrides})


def training_setup(cfg: Config, runtime: Optional[Runtime] = None) -> TrainingSetup:
    """``runtime``: the decisions already taken for this config (as for its loaders), else taken here."""
    runtime = runtime or Runtime.resolve(cfg, resolve_device(cfg.device))  # the training command's, on this machine
    seed_everything(cfg.seed)
    model = place_model(cfg, runtime)
    optimizer, _, _ = build_optimizer_and_scheduler(cfg, model, fused=runtime.fused_optimizer)
    mixup, loss_fn = make_mixup_and_loss(cfg, True, runtime.device)
    return TrainingSetup(cfg, runtime, model, compile_model(cfg, model, runtime), optimizer, mixup, loss_fn)


def run(train_images: int, test_images: int, workers: int | str, batch: int, amp: str, epochs: int, overrides: dict,
        eval_per_image: bool = False, val_batch: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_fake_cifar(tmp, "torch/cifar10", n_train=train_images, n_test=test_images, seed=0)
        generate_s = time.perf_counter() - t0
        cfg = study_config({"data_dir": tmp, "workers": workers, "batch_size": batch,
                            "val_batch_size": val_batch or max(batch, 256), "amp": amp, **overrides})
        device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        splits = build_datasets(cfg)
        if eval_per_image:  # timm's evaluation transform on each image, as if it changed them
            splits.eval.transform = build_transforms(cfg, False)
        runtime = Runtime.resolve(cfg, device)
        train_loader = build_train_loader(cfg, splits.train, device=device, workers=runtime.workers,
                                          channels_last=runtime.channels_last)
        eval_loader = build_eval_loader(cfg, splits.eval, device=device, workers=runtime.workers,
                                        channels_last=runtime.channels_last)

        workers = train_loader.num_workers
        t0 = time.perf_counter()
        sum(images.shape[0] for images, _ in train_loader)  # the first pass also starts the (persistent) workers
        first_pass_s = time.perf_counter() - t0
        train_loader.sampler.set_epoch(1)
        t0 = time.perf_counter()
        n = sum(images.shape[0] for images, _ in train_loader)  # the steady state, as every later epoch of a run
        data_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_eval = sum(images.shape[0] for images, _ in eval_loader)
        eval_data_s = time.perf_counter() - t0
        data = {"data_first_pass_s": round(first_pass_s, 3), "data_only_images_per_s": round(n / data_s, 1),
                "eval_data_only_images_per_s": round(n_eval / eval_data_s, 1)}
        if epochs == 0:  # --data-only
            return {"workers": workers, "batch": batch, "train_images": n, "eval_images": n_eval, **data}

        setup = training_setup(cfg, runtime)
        times = []
        for epoch in range(epochs):  # the first epoch also compiles; the last one is the steady state
            sync(device)
            t0 = time.perf_counter()
            stats = setup.train_epoch(train_loader, epoch)
            sync(device)
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = setup.evaluate(eval_loader)
            sync(device)
            eval_s = time.perf_counter() - t0
            times.append(train_s + eval_s)
    total = stats["images"] + metrics["eval_images"]
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "workers": workers, "batch": batch, "val_batch": cfg.val_batch_size, "amp": amp,
        "compile": runtime.compile_mode or "off", "backward_memory": runtime.backward_memory,
        "channels_last": runtime.channels_last,
        "fused_optimizer": runtime.fused_optimizer, "spike_mode": cfg.spike_mode,
        "epochs": epochs, "first_epoch_s": round(times[0], 2),
        "train_images": stats["images"], "eval_images": metrics["eval_images"],
        "generate_s": round(generate_s, 2), **data,
        "train_s": round(train_s, 3), "train_images_per_s": round(stats["images"] / train_s, 1),
        "eval_s": round(eval_s, 3), "eval_images_per_s": round(metrics["eval_images"] / eval_s, 1),
        "epoch_plus_eval_images_per_s": round(total / (train_s + eval_s), 1),
        "projected_310_epochs_min": round(310 * (train_s + eval_s) / 60, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=50_000)
    p.add_argument("--test-images", type=int, default=10_000)
    p.add_argument("--workers", default="auto", help="loader workers: a number, or auto (as a training run chooses)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--val-batch", type=int, help="evaluation batch size (default: the larger of --batch and 256)")
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"))
    p.add_argument("--compile", default="auto", choices=("auto", "true", "false"),
                   help="as the config key: auto compiles on CUDA (the training command's default)")
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument("--backward-memory", default="auto", choices=MEMORY_MODES)
    p.add_argument("--fused-optimizer", default="auto", choices=("auto", "true", "false"),
                   help="the optimizer step as one fused kernel (auto: as a training run chooses, on for CUDA)")
    p.add_argument("--spike-mode", default="if_soft", help="the neuron (the study's command names one: if_soft here)")
    p.add_argument("--epochs", type=int, default=2, help="epochs to run; the last one is reported")
    p.add_argument("--data-only", action="store_true", help="time the data pipelines alone (no model)")
    p.add_argument("--eval-per-image", action="store_true",
                   help="transform each evaluation image with timm's transform, although it returns them unchanged")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a CPU check")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    overrides = {"compile": args.compile, "compile_mode": args.compile_mode, "backward_memory": args.backward_memory,
                 "fused_optimizer": args.fused_optimizer, "spike_mode": args.spike_mode}
    if args.quick:
        vars(args).update(QUICK_SIZES)
        overrides.update(QUICK_OVERRIDES)
    epochs = 0 if args.data_only else args.epochs
    result = run(args.train_images, args.test_images, args.workers, args.batch, args.amp, epochs, overrides,
                 eval_per_image=args.eval_per_image, val_batch=args.val_batch)
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def print_result(result: dict) -> None:
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
