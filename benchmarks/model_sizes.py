"""Parameters, dense operations and energy of the models the configs describe.

    python benchmarks/model_sizes.py                                  # the five ImageNet configs
    python benchmarks/model_sizes.py conf/cifar10/2_256_300E_t4.yml   # any configs
    python benchmarks/model_sizes.py --rates RUN/eval_last/metrics.json

Parameters are counted as built here and with the original code's dead
weights (its unused talking-heads convolution, 64 per block), which its
published counts include. Dense MACs are per image and time step at
``img_size``, bias excluded, counted by running the model once
(``spikedriven.analysis.OperationCounter``). With ``--rates``, energy per image
follows the SDT convention at the input firing rates of an evaluated model:
each layer of a config takes the rate of the layer with the same role in the
evaluated one (its ``block.N`` averaged over blocks), so a small trained model
gives the larger ones plausible rates.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikedriven.analysis import E_AC, E_MAC, OperationCounter  # noqa: E402
from spikedriven.config import load_config  # noqa: E402
from spikedriven.models import build_model  # noqa: E402

# The original SDT's published ImageNet models: parameters (with its dead weights), top-1, energy.
PUBLISHED = {
    (8, 384): (16_816_536, 72.28, 3.90), (6, 512): (23_373_736, 74.11, 3.56), (8, 512): (29_689_896, 74.57, 4.50),
    (10, 512): (36_006_056, 74.66, 5.53), (8, 768): (66_339_144, 77.07, 6.09),
}


def role(layer: str) -> str:
    return re.sub(r"^block\.\d+\.", "block.*.", layer)


def role_rates(metrics_path: str) -> dict:
    metrics = json.loads(Path(metrics_path).read_text())
    by_role: dict[str, list] = {}
    for row in metrics["layers"]:
        if row["input_firing_rate"] is not None:
            by_role.setdefault(role(row["name"]), []).append(row["input_firing_rate"])
    return {r: statistics.fmean(v) for r, v in by_role.items()}


def measure(config: str, rates: dict | None) -> dict:
    cfg = load_config(config, {"amp": "none", "device": "cpu"})
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    # one time step is enough: the dense count per step does not depend on T
    shape = (1, 1, cfg.in_chans, cfg.img_size, cfg.img_size)
    with torch.no_grad(), OperationCounter(model) as counter:
        model(torch.zeros(shape))
    layers = counter.layers()
    settings = cfg.model_settings()
    out = {"config": config, "depth": settings["depth"], "embed_dim": settings["embed_dim"], "time_steps": cfg.time_steps,
           "params": params, "params_with_dead": params + 64 * settings["depth"],
           "macs_per_step": sum(l.macs_per_step for l in layers)}
    if rates is not None:
        energy = 0.0
        for i, l in enumerate(layers):
            if i == 0:  # the first convolution sees the image: MACs at every step
                energy += E_MAC * cfg.time_steps * l.macs_per_step
            else:
                energy += E_AC * rates.get(role(l.name), 0.0) * cfg.time_steps * l.macs_per_step
        out["energy_mj"] = energy * 1e3
        out["ann_energy_mj"] = E_MAC * out["macs_per_step"] * 1e3
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help="config files (default: conf/imagenet/*.yml)")
    parser.add_argument("--rates", metavar="METRICS_JSON", help="input firing rates from an evaluation's metrics.json")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    configs = args.configs or glob.glob(str(ROOT / "conf/imagenet/*.yml"))
    rates = role_rates(args.rates) if args.rates else None
    order = list(PUBLISHED)
    rows = sorted((measure(c, rates) for c in configs),  # the published models' order, then the rest
                  key=lambda r: (order.index((r["depth"], r["embed_dim"])) if (r["depth"], r["embed_dim"]) in order else len(order), r["config"]))
    head = "| config | depth-embed_dim | parameters | with the original's dead weights | published | dense MACs / step (G) |"
    line = "|---|---|---|---|---|---|"
    if rates is not None:
        head += " SNN energy / image (mJ) | ANN energy (mJ, one pass) | published energy (mJ) |"
        line += "---|---|---|"
    print(head)
    print(line)
    for r in rows:
        pub = PUBLISHED.get((r["depth"], r["embed_dim"]))
        cells = [Path(r["config"]).name, f"{r['depth']}-{r['embed_dim']}", f"{r['params']:,}", f"{r['params_with_dead']:,}",
                 f"{pub[0]:,}" if pub else "-", f"{r['macs_per_step'] / 1e9:.2f}"]
        if rates is not None:
            cells += [f"{r['energy_mj']:.2f}", f"{r['ann_energy_mj']:.2f}", f"{pub[2]:.2f}" if pub else "-"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
