"""What writing an epoch's checkpoints costs the training loop: on its own thread (before) or on the
writer's thread while the next epoch trains (now, ``engine.checkpoint_writer``).

    python benchmarks/checkpoint_save.py                  # the study's model and AdamW state, CPU
    python benchmarks/checkpoint_save.py --device cuda    # the same on a GPU: the host copy is a device-to-host copy
    python benchmarks/checkpoint_save.py --quick          # a small model, for a smoke run

An improving epoch writes best.pth.tar and last.pth.tar. For each of ``--repeats`` saves of both files
it reports the median of:
  - before: the two ``save_checkpoint`` calls on the training thread, which waits for them;
  - now, on the training thread: ``CheckpointWriter.save`` (a host copy of every tensor, then a hand-over);
  - now, until both files are on disk (nothing else running);
  - ``--steps`` training steps (the eager model, a synthetic batch) alone, and started right after a save
    while the files are written: what the writing thread takes from the steps it runs beside.
The loop's saving per epoch is before - (now on the training thread) - (steps beside a write - steps alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import QUICK_OVERRIDES, study_config, sync, training_setup  # noqa: E402
from throughput import timed  # noqa: E402

from spikedriven.engine.checkpoint import save_checkpoint  # noqa: E402
from spikedriven.engine.checkpoint_writer import CheckpointWriter  # noqa: E402


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


def run(device: str, batch: int, steps: int, repeats: int, overrides: dict) -> dict:
    setup = training_setup(study_config({"device": device, **overrides}))
    model, optimizer, dev = setup.model, setup.optimizer, setup.runtime.device
    cfg = setup.cfg
    images = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=dev)
    labels = torch.randint(0, cfg.num_classes, (batch,), device=dev)

    def step() -> None:  # eager: a compiled model would compile here, which is not what is measured
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def timed_steps() -> float:
        return timed(step, 0, steps, dev)

    step()  # the optimizer's state exists from its first step on, as in every checkpoint but a run's very first
    timed_steps()  # warm-up

    def payload(epoch: int) -> dict:  # what the trainer saves at an epoch's end (the scheduler's state is a few numbers)
        return {"epoch": epoch, "step": 0, "epoch_state": {"step": 0, "loss_sum": 0.0, "images": 0},
                "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": {},
                "config": cfg.to_dict(), "model_args": cfg.model_kwargs(), "best": {"eval_top1": 1.0, "epoch": epoch},
                "eval_set": "test", "rng": None}

    before, now_main, now_done, alone, beside = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, CheckpointWriter() as writer:
        best, last = Path(tmp) / "best.pth.tar", Path(tmp) / "last.pth.tar"
        for epoch in range(repeats):
            sync(dev)
            t0 = time.perf_counter()
            save_checkpoint(best, payload(epoch))
            save_checkpoint(last, payload(epoch))
            before.append(time.perf_counter() - t0)

            alone.append(timed_steps())

            sync(dev)
            t0 = time.perf_counter()
            writer.save(payload(epoch), best, last)
            now_main.append(time.perf_counter() - t0)
            writer.wait()
            now_done.append(time.perf_counter() - t0)

            writer.save(payload(epoch), best, last)
            beside.append(timed_steps())
            writer.wait()
        size = last.stat().st_size
    med = statistics.median
    saved = med(before) - med(now_main) - max(med(beside) - med(alone), 0.0)
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()), "file_mb": round(size / 2**20, 1),
        "repeats": repeats, "batch": batch, "steps": steps,
        "before_ms": _ms(med(before)), "now_training_thread_ms": _ms(med(now_main)),
        "now_until_on_disk_ms": _ms(med(now_done)),
        "steps_alone_ms": _ms(med(alone)), "steps_beside_a_write_ms": _ms(med(beside)),
        "saved_per_improving_epoch_ms": _ms(saved),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8, help="the steps' batch (default 8: a CPU step of the study's model)")
    p.add_argument("--steps", type=int, default=3, help="training steps timed alone and beside a write")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a small model and 2 repeats")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    overrides = {k: v for k, v in QUICK_OVERRIDES.items() if k != "device"} if a.quick else {}
    result = run(a.device, a.batch, a.steps, 2 if a.quick else a.repeats, overrides)
    print(f"{result['device']}, torch {result['torch']}: {result['parameters']:,} parameters, "
          f"{result['file_mb']} MiB a checkpoint file, best + last written, median of {result['repeats']}")
    rows = [("before: both files written on the training thread", "before_ms"),
            ("now: the training thread's share (host copy, hand-over)", "now_training_thread_ms"),
            ("now: until both files are on disk", "now_until_on_disk_ms"),
            (f"{result['steps']} training steps of batch {result['batch']}, alone", "steps_alone_ms"),
            ("the same steps while the files are written", "steps_beside_a_write_ms"),
            ("saved for the training loop per improving epoch", "saved_per_improving_epoch_ms")]
    for label, key in rows:
        print(f"  {label:<60} {result[key]:>9.2f} ms")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
