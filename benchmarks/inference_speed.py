"""Inference speed per neuron: the study's claim that IF soft reset infers faster than LIF, measured.

    python benchmarks/inference_speed.py                        # CIFAR SDT 2-256, T = 4; every study neuron
    python benchmarks/inference_speed.py --amp bf16 --batch-sizes 1 64 256
    python benchmarks/inference_speed.py --quick                # toy sizes, for a CPU try

For each neuron: an untrained model of the config (speed does not depend on
the weights, only on the neuron's arithmetic), timed with
``spikedriven.analysis.speed.measure_speed`` at each batch size, with the fused
kernels (CUDA only) and with the per-step loop. The published figures (IF soft
1,323 images/s, IF hard 1,244, LIF 1,161; GPU and batch not stated) are shown
beside ours for reference, never compared by the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikedriven.analysis.speed import format_speed, measure_speed  # noqa: E402
from spikedriven.config import load_config  # noqa: E402
from spikedriven.engine.loop import AMP_DTYPES  # noqa: E402
from spikedriven.models import build_model  # noqa: E402

PUBLISHED_IMAGES_PER_S = {"if_soft": 1323.4, "if": 1244.2, "lif": 1161.2}
QUICK = {"embed_dim": 16, "num_heads": 2, "depth": 1, "img_size": 16}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "conf/cifar10/2_256_300E_t4.yml"))
    p.add_argument("--neurons", nargs="+", default=["lif", "if", "if_soft", "lif_soft", "plif", "multispike"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="toy model and 2 repeats: checks the script, not a speed")
    p.add_argument("--json", help="write every row here")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    rows = []
    for mode in args.neurons:
        overrides = {"spike_mode": mode, "device": device.type, "amp": args.amp, **(QUICK if args.quick else {})}
        cfg = load_config(args.config, overrides)
        torch.manual_seed(0)
        model = build_model(cfg).to(device).eval()
        example = torch.randn(max(args.batch_sizes), cfg.in_chans, cfg.img_size, cfg.img_size)
        measured = measure_speed(model, example, device, AMP_DTYPES[args.amp], batch_sizes=args.batch_sizes,
                                 repeats=repeats, warmup=warmup)
        print(f"--- {mode} ({Path(args.config).name}{', quick' if args.quick else ''}; published: "
              f"{PUBLISHED_IMAGES_PER_S.get(mode, '-')} images/s, GPU and batch not stated)")
        print(format_speed(measured))
        rows += [{"neuron": mode, **r} for r in measured]
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\nimages/s per neuron (path: batch -> images/s)")
    for mode in args.neurons:
        cells = [f"{r['path']} b{r['batch']} {r['images_per_s']:,.1f}" for r in rows
                 if r["neuron"] == mode and r["available"]]
        print(f"{mode:<11} " + "  ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "amp": args.amp, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
