"""Data-parallel scaling: one run trained by 1, 2, ... processes under torchrun, images/s of each.

    python benchmarks/ddp_scaling.py                        # the digits demo on CPU, gloo, 1 and 2 processes
    python benchmarks/ddp_scaling.py --procs 1 2 4 --device cuda -c conf/cifar10/2_256_300E_t4.yml --data-dir DATA

Every run is the real ``spikedriven train`` under ``torch.distributed.run`` (gloo on CPU, NCCL on
CUDA). The CPU cores are split between the processes (``OMP_NUM_THREADS``), so on CPU this is a smoke
test of the distributed path at a fixed machine, not a scaling figure: one process already uses every
core. Per process count it prints the training images/s of the last epoch (all processes together,
as summary.csv records it), that against the first count, and the final top-1. Each process trains
``batch_size`` images a step, as torchrun runs do, so N processes make 1/N of the steps an epoch:
compare top-1 at equal steps, not at equal epochs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(procs: int, args, folder: Path) -> dict:
    run = folder / f"procs{procs}"
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // procs))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
           "-m", "spikedriven", "train", "-c", args.config, "--epochs", str(args.epochs), "--warmup-epochs", "0",
           "--cooldown-epochs", "0", "--device", args.device, "--output", str(run), *args.extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{procs} process(es) failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    with (run / "summary.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    return {"procs": procs, "images_per_s": float(last["images_per_s"]), "train_seconds": float(last["train_seconds"]),
            "top1": float(last["eval_top1"])}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=str(ROOT / "conf/digits/demo.yml"))
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=2, help="the last one is timed (the first warms up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("extra", nargs="*", help="further train flags, after --, e.g. -- --embed-dim 32 --workers 0")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [train(n, args, Path(tmp)) for n in args.procs]
    base = rows[0]["images_per_s"]
    print(f"{Path(args.config).name} on {args.device}, {args.epochs} epoch(s), last epoch timed")
    print("| processes | images/s (all) | vs first | train s | top-1 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['procs']} | {r['images_per_s']:,.0f} | {r['images_per_s'] / base:.2f}x | {r['train_seconds']:.1f} "
              f"| {r['top1']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
