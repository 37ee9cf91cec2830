"""What it costs the main process to receive a batch from a loader worker, by how the batch travels.

    python benchmarks/loader_transfer.py                         # CIFAR-sized images, batches of 64 and 256
    python benchmarks/loader_transfer.py --size 224 --batch-sizes 64 --images 1024   # ImageNet-sized
    python benchmarks/loader_transfer.py --quick                 # a smoke run

The samples cost nothing to make (stored uint8 images), so what is timed is the transfer: the worker's
collate, the hand-over and the main process's receiving. Per batch it prints the wall time and the main
process's own CPU time (``getrusage``; the workers' time is not in it). The main process is the one that
a fast GPU waits on: it receives every batch of every worker and also runs the training loop.

Ways a batch can travel:

* ``float32 tensors``: images converted and normalised in the worker, images and labels as tensors
  (each in a shared-memory segment of its own);
* ``uint8 tensors``: the images as stored, labels as a tensor;
* ``spikedriven``: what ``data.batches.ImageCollate`` does: uint8 images, by value (pickled through the
  worker's pipe) below ``BY_VALUE_BYTES`` and in shared memory above, labels by value.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spikedriven.data.batches import ImageCollate

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class StoredImages(Dataset):
    def __init__(self, n: int, size: int):
        self.images = np.random.default_rng(0).integers(0, 256, (min(n, 512), size, size, 3), dtype=np.uint8)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.images[i % len(self.images)], i % 10


def float32_tensors(samples):
    images = torch.from_numpy(np.stack([image for image, _ in samples])).permute(0, 3, 1, 2).contiguous()
    mean, std = torch.tensor(MEAN).view(1, -1, 1, 1), torch.tensor(STD).view(1, -1, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std), torch.tensor([label for _, label in samples])


def uint8_tensors(samples):
    return torch.from_numpy(np.stack([image for image, _ in samples])), torch.tensor([label for _, label in samples])


COLLATES = {"float32 tensors": float32_tensors, "uint8 tensors": uint8_tensors, "spikedriven": ImageCollate()}


def main_process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(collate, batch: int, workers: int, images: int, size: int, passes: int) -> dict:
    loader = DataLoader(StoredImages(images, size), batch_size=batch, num_workers=workers, collate_fn=collate,
                        persistent_workers=True, drop_last=True)
    for _ in range(passes):  # the first pass also starts the workers; the last is reported
        start, cpu_start, n = time.perf_counter(), main_process_cpu(), 0
        for _ in loader:
            n += 1
        wall, cpu = time.perf_counter() - start, main_process_cpu() - cpu_start
    return {"batches": n, "wall_ms_per_batch": 1e3 * wall / n, "main_cpu_ms_per_batch": 1e3 * cpu / n,
            "images_per_s": n * batch / wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--images", type=int, default=16384, help="images per pass")
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.images, args.passes = [16], 128, 1
    rows = []
    print(f"{'batch travels as':<16} {'batch':>5} {'MiB':>6} {'wall ms':>8} {'main-process CPU ms':>20} {'images/s':>10}")
    for batch in args.batch_sizes:
        for name, collate in COLLATES.items():
            row = {"collate": name, "batch": batch, "workers": args.workers, "size": args.size,
                   "uint8_mib": batch * args.size ** 2 * 3 / 2**20,
                   **measure(collate, batch, args.workers, args.images, args.size, args.passes)}
            rows.append(row)
            print(f"{name:<16} {batch:>5} {row['uint8_mib']:>6.2f} {row['wall_ms_per_batch']:>8.3f} "
                  f"{row['main_cpu_ms_per_batch']:>20.3f} {row['images_per_s']:>10,.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
