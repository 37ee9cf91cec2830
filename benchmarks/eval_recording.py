"""The per-epoch evaluation, eager against compiled: images/s with the spike recorder on, as a run evaluates.

    python benchmarks/eval_recording.py                          # CIFAR SDT 2-256, T = 4, batch 64, CPU
    python benchmarks/eval_recording.py --device cuda --compile-mode reduce-overhead
    python benchmarks/eval_recording.py --quick                  # a small model, a smoke run

Both passes run ``engine.loop.evaluate`` with a ``SpikeRecorder`` over the same random batches; the
compiled one counts the spikes inside its graph (``SpikingNeuron.tally``). Prints images/s of each
after a warm-up (which compiles), the compile time, and the top-1 and mean firing rate of both, which
must agree (inductor may move a membrane potential that lies within rounding of the threshold).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from spikedriven import SpikeRecorder
from spikedriven.config import load_config
from spikedriven.engine.loop import evaluate
from spikedriven.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def timed(model, batches, device, cuda_graphs: bool) -> dict:
    evaluate(model, batches[:2], device, recorders=(SpikeRecorder(model),), cuda_graphs=cuda_graphs)  # warm-up
    recorder = SpikeRecorder(model)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    metrics = evaluate(model, batches, device, recorders=(recorder,), cuda_graphs=cuda_graphs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images_per_s": round(metrics["eval_images"] / seconds, 1), "top1": metrics["eval_top1"],
            "mean_firing_rate": recorder.firing_rates()[1]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=str(ROOT / "conf/cifar10/2_256_300E_t4.yml"))
    p.add_argument("--spike-mode", default="if_soft")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: graphs only, for tests)")
    p.add_argument("--quick", action="store_true", help="embed_dim 32, depth 1, T = 2, 16x16 images, 3 batches of 8")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    overrides = {"spike_mode": args.spike_mode}
    if args.quick:
        overrides.update(embed_dim=32, depth=1, num_heads=4, time_steps=2, img_size=16)
        args.batch, args.batches = 8, 3
    cfg = load_config(args.config, overrides)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    # images at 3x unit variance: an untrained network then fires enough for the counts to mean something
    batches = [(3 * torch.randn(args.batch, cfg.in_chans, cfg.img_size, cfg.img_size),
                torch.randint(0, cfg.num_classes, (args.batch,))) for _ in range(args.batches)]
    batches = [(images.to(device), labels.to(device)) for images, labels in batches]  # as a run's batches arrive
    eager = timed(model, batches, device, cuda_graphs=False)
    start = time.perf_counter()
    options = {"mode": args.compile_mode} if args.backend == "inductor" else {"backend": args.backend}
    compiled = torch.compile(model, **options)
    cuda_graphs = device.type == "cuda" and args.compile_mode in ("reduce-overhead", "max-autotune")
    evaluate(compiled, batches[:1], device, recorders=(SpikeRecorder(compiled),), cuda_graphs=cuda_graphs)
    compile_s = time.perf_counter() - start
    fast = timed(compiled, batches, device, cuda_graphs=cuda_graphs)
    print(f"{Path(args.config).name} {cfg.spike_mode}, batch {args.batch} x {args.batches}, {device} "
          f"(torch {torch.__version__}); evaluation with the spike recorder")
    print("| model | images/s | top-1 | mean firing rate |")
    print("|---|---|---|---|")
    for label, row in (("eager", eager), (f"compiled ({args.backend} {args.compile_mode}, {compile_s:.0f} s to compile)", fast)):
        print(f"| {label} | {row['images_per_s']:,.1f} | {row['top1']:.2f} | {row['mean_firing_rate']:.6f} |")
    print(f"compiled / eager: {fast['images_per_s'] / eager['images_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"eager": eager, "compiled": fast, "compile_s": compile_s}, indent=1))


if __name__ == "__main__":
    main()
