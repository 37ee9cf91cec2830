"""What one training step of the real loop dispatches, by phase: the host cost that bounds a fast GPU.

    python benchmarks/step_overhead.py                    # the study's model and recipe, batch 64, CPU
    python benchmarks/step_overhead.py --quick            # a small model, for a smoke run
    python benchmarks/step_overhead.py --device cuda      # the same count on a GPU, with host and GPU time

At 25,000 images/s a step of batch 64 has 2.6 ms. Every PyTorch operator the loop dispatches costs host
time (a few microseconds on any device, and a kernel launch on a GPU), so the number of operators a step
dispatches outside the model's own compute is a cost that no GPU makes faster. The count does not depend
on the device, so it is measured here on the CPU and compared across settings (the optimizer's foreach
and fused steps, mixup on or off, eager or compiled): ``engine.loop.train_one_epoch`` runs unchanged over
synthetic batches, with every dispatched aten operator counted under the phase it ran in (model forward,
backward, loss, mixup, zero_grad, optimizer step, and the loop's own bookkeeping).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import spikedriven  # noqa: F401  (registers "sdt" with timm)
from spikedriven.config import load_config
from spikedriven.engine import loop
from spikedriven.engine.recipe import build_optimizer_and_scheduler, make_mixup_and_loss
from spikedriven.models import build_model

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("forward", "loss", "backward", "mixup", "zero_grad", "optimizer", "loop")


class PhaseCounter(TorchDispatchMode):
    """Counts every aten operator dispatched, under the phase that is current when it runs."""

    def __init__(self):
        super().__init__()
        self.phase = "loop"
        self.ops: Counter = Counter()
        self.seconds: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[self.phase] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def within(self, phase: str):
        outer, self.phase = self.phase, phase
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self.phase = outer


def _wrap(counter: PhaseCounter, phase: str, fn):
    def wrapped(*args, **kwargs):
        with counter.within(phase):
            return fn(*args, **kwargs)
    return wrapped


def measure(cfg, device: torch.device, batch: int, steps: int, fused: bool, mixup_on: bool) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    optimizer, _, _ = build_optimizer_and_scheduler(cfg, model, fused=fused)
    if not fused:  # the multi-tensor step, as torch picks it on CUDA (on CPU it would loop over the parameters)
        for group in optimizer.param_groups:
            group["foreach"] = True
    mixup, loss_fn = make_mixup_and_loss(cfg, mixup_on, device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(steps, batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen)
    labels = torch.randint(cfg.num_classes, (steps, batch), generator=gen)
    batches = list(zip(images.to(device), labels.to(device)))  # on the device, as a run's batches arrive
    # one untimed step: lazily built state (the optimizer's moments, cuDNN plans) is not a per-step cost
    loop.train_one_epoch(model, batches[:1], optimizer, loss_fn, loop.StepOptions(device=device), epoch=0, mixup=mixup)

    counter = PhaseCounter()
    originals = {"forward": model.forward, "step": optimizer.step, "zero_grad": optimizer.zero_grad,
                 "loss": loop.classification_loss, "backward": torch.Tensor.backward}
    model.forward = _wrap(counter, "forward", originals["forward"])
    optimizer.step = _wrap(counter, "optimizer", originals["step"])
    optimizer.zero_grad = _wrap(counter, "zero_grad", originals["zero_grad"])
    loop.classification_loss = _wrap(counter, "loss", originals["loss"])
    torch.Tensor.backward = _wrap(counter, "backward", originals["backward"])
    timed_mixup = _wrap(counter, "mixup", mixup) if mixup is not None else None
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with counter:
            loop.train_one_epoch(model, batches[1:], optimizer, loss_fn, loop.StepOptions(device=device, sync_every=10),
                                 epoch=0, mixup=timed_mixup)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    finally:
        loop.classification_loss = originals["loss"]
        torch.Tensor.backward = originals["backward"]
        del model.forward, optimizer.step, optimizer.zero_grad
    n = steps - 1
    # the phases nest in the wall clock (the loop holds them all): the loop's own share is what is left
    inner = sum(v for k, v in counter.seconds.items() if k != "loop")
    seconds = {**{k: counter.seconds[k] for k in PHASES if k != "loop"}, "loop": max(wall - inner, 0.0)}
    return {
        "optimizer": f"{cfg.opt} {'fused' if fused else 'foreach'}", "mixup": mixup_on, "batch": batch,
        "steps": n, "device": str(device),
        "ops_per_step": {k: round(counter.ops[k] / n, 1) for k in PHASES},
        "outside_model_ops_per_step": round(sum(counter.ops[k] for k in PHASES if k not in ("forward", "backward")) / n, 1),
        "ms_per_step": {k: round(1e3 * seconds[k] / n, 3) for k in PHASES},
        "step_ms": round(1e3 * wall / n, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "conf/cifar10/2_256_300E_t4.yml"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="steps counted (one more runs first, uncounted)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="a small model (embed_dim 32, depth 1, T = 2)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    overrides = {"device": args.device}
    if args.quick:
        overrides.update(embed_dim=32, depth=1, time_steps=2)
        args.batch, args.steps = min(args.batch, 8), min(args.steps, 3)
    cfg = load_config(args.config, overrides)
    device = torch.device(args.device)
    rows = [measure(cfg, device, args.batch, args.steps + 1, fused, mixup_on)
            for fused, mixup_on in ((False, True), (True, True), (True, False))]

    print(f"{Path(args.config).name}: {cfg.model} {cfg.model_settings()}, T = {cfg.time_steps}, batch {args.batch}, "
          f"{args.steps} steps on {device} (torch {torch.__version__}); aten operators dispatched per step, and "
          f"host ms per step")
    header = ["optimizer", "mixup", *PHASES, "outside model", "step ms"]
    table = [header]
    for r in rows:
        ops = r["ops_per_step"]
        table.append([r["optimizer"], "on" if r["mixup"] else "off",
                      *(f"{ops[k]:g} ({r['ms_per_step'][k]:.2f} ms)" for k in PHASES),
                      f"{r['outside_model_ops_per_step']:g}", f"{r['step_ms']:.1f}"])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
