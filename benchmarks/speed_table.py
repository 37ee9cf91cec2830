"""The GPU speed table: the study's command with no speed flags, measured row by row, printed beside the
original code's figures and the targets.

    python benchmarks/speed_table.py --json speed_table.json     # measure the model-step rows (synthetic batches)
    python benchmarks/speed_table.py --report OUT                # print the table from OUT's JSON files
    python benchmarks/speed_table.py --quick --json t.json       # a small model on the CPU: a smoke run

Every row runs what ``spikedriven train -c conf/cifar10/2_256_300E_t4.yml --spike-mode if_soft`` runs:
its config, the Runtime's "auto" decisions for this machine (compile with CUDA graphs, lean backward
memory, channels-last, the fused optimizer on a GPU), the same optimizer, mixup and loss, and the loop's own
``train_one_epoch`` and ``evaluate`` (with the spike recorder, as the per-epoch evaluation). Only the
batch size and ``amp`` change between rows. The batches here are generated on the device, so these rows
are the model step alone. The end-to-end rows (loaders, augmentation, evaluation set) come from the
report folder's JSON, as ``benchmarks/gpu_session.sh`` writes it: ``run_rate.json`` (``benchmarks/run_rate.py``:
the command itself, with the defaults, an epoch timed whole from the run's log) and ``end_to_end_best.json``
and ``end_to_end_defaults.json`` (``benchmarks/end_to_end.py``: an epoch and its evaluation through the
command's setup and loop, without what a run does between epochs, and the loaders alone beside it).

Each row's model is built and compiled afresh (a run at that batch size compiles for it alone), and the
JSON is rewritten after each row, so a time limit that stops the script keeps the rows measured so far.
The report computes each figure from the recorded images, seconds and bytes.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from torch._dynamo.utils import counters

import end_to_end  # this folder's end-to-end benchmark: the training command's setup
from end_to_end import sync

# The original code's figures, measured in an earlier session on one H200 with torch 2.11 (CIFAR-10 2-256,
# T = 4, AdamW). The original cannot run on a machine without its own environment, so they are quoted here
# beside ours, not measured by this script.
ORIGINAL = {
    "train_defaults": "1,978 img/s",
    "train_best": "8,335 img/s (batch 256, fp16)",
    "peak_memory": "14.1 GB",
    "eval_over_train": "-",
    "end_to_end": "-",
}
# (comparison, value) for each row: ">=" the least, "<=" the most
TARGETS = {
    "train_defaults": (">=", 6000.0),
    "train_best": (">=", 25000.0),
    "peak_memory": ("<=", 4.7),  # GB (10^9 bytes)
    "eval_over_train": (">=", 4.0),
    "end_to_end": (">=", 20000.0),
}
QUICK_OVERRIDES = dict(embed_dim=32, depth=1, time_steps=2)


# ------------------------------------------------------------------ measuring


def synthetic_batches(setup: end_to_end.TrainingSetup, batch: int, n: int) -> list:
    """``n`` batches of the study's shape on the device, in the run's memory format, made before the timing (no
    loader or copy is timed). Each is its own tensor: mixup mixes a batch in place."""
    cfg, device = setup.cfg, setup.runtime.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen).to(device)
    if setup.runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, cfg.num_classes, (batch,), generator=gen).to(device)
    return [(images.clone(), labels) for _ in range(n)]


def release_earlier_rows(device: torch.device) -> int:
    """Free what earlier rows' compiled graphs hold; the bytes still allocated (not this row's)."""
    torch._dynamo.reset()  # each row compiles for itself, as a run at its batch size does
    if device.type != "cuda":
        return 0
    try:
        from torch._inductor import cudagraph_trees

        cudagraph_trees.reset_cudagraph_trees()  # the CUDA graphs' memory pools
    except Exception as e:  # a private API: if it moved, the row is measured anyway and says what it held
        print(f"speed_table: CUDA graph pools not released ({type(e).__name__}: {e})", file=sys.stderr)
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated(device)


def measure(batch: int, amp: str, args: argparse.Namespace, with_eval: bool = False) -> dict:
    """Train steps (and evaluation batches) at one setting: images, seconds and peak memory, as recorded facts."""
    overrides = {"batch_size": batch, "val_batch_size": batch, "amp": amp, "device": args.device}
    if args.quick:
        overrides.update(QUICK_OVERRIDES)
    cfg = end_to_end.study_config(overrides)
    held_before = release_earlier_rows(torch.device(args.device))
    setup = end_to_end.training_setup(cfg)
    device, runtime = setup.runtime.device, setup.runtime
    row = {"batch": batch, "amp": amp, "compile": runtime.compile_mode or "off", "cuda_graphs": runtime.cuda_graphs,
           "backward_memory": runtime.backward_memory, "channels_last": runtime.channels_last,
           "fused_optimizer": runtime.fused_optimizer, "spike_mode": setup.cfg.spike_mode}

    # the first steps compile (and record the CUDA graphs): timed apart, not part of the rate
    graphs_before = counters["stats"]["unique_graphs"]
    if device.type == "cuda":  # the peak over the whole row, compiling included: what a run must fit
        torch.cuda.reset_peak_memory_stats(device)
    warmup, timed = synthetic_batches(setup, batch, args.warmup), synthetic_batches(setup, batch, args.steps)
    sync(device)
    start = time.perf_counter()
    setup.train_epoch(warmup)
    sync(device)
    row["first_steps_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    stats = setup.train_epoch(timed)
    sync(device)
    train_s = time.perf_counter() - start
    # this row's own peak: what earlier rows still held is not its
    peak = torch.cuda.max_memory_allocated(device) - held_before if device.type == "cuda" else None
    row.update(train_images=stats["images"], train_s=train_s, train_peak_bytes=peak, held_before_bytes=held_before)
    # a compile that failed under compile: auto falls back to eager without stopping the run: count the graphs
    row["graphs_compiled"] = counters["stats"]["unique_graphs"] - graphs_before
    if with_eval:
        setup.evaluate(warmup)  # the evaluation graph compiles here
        sync(device)
        start = time.perf_counter()
        metrics = setup.evaluate(timed)
        sync(device)
        row.update(eval_images=metrics["eval_images"], eval_s=time.perf_counter() - start,
                   graphs_compiled=counters["stats"]["unique_graphs"] - graphs_before)
    return row


def environment(device: torch.device) -> dict:
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__}


def measure_all(args: argparse.Namespace) -> dict:
    """The rows in order of importance, each written out as soon as it is measured."""
    small, memory_batch, best_batches = (8, 16, (16, 32)) if args.quick else (64, 256, tuple(args.best_batches))
    report = {"environment": environment(torch.device(args.device)), "defaults": None, "memory": None, "best": []}

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))

    report["defaults"] = measure(small, "none", args, with_eval=True)
    save()
    report["memory"] = measure(memory_batch, "none", args)
    save()
    for batch in best_batches:
        report["best"].append(measure(batch, "bf16", args))
        save()
    return report


# ------------------------------------------------------------------ the table


def rate(images: Optional[float], seconds: Optional[float]) -> Optional[float]:
    return images / seconds if images and seconds else None


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def table_rows(speed: Optional[dict], e2e_defaults: Optional[dict], e2e_best: Optional[dict],
               run: Optional[dict] = None) -> list[dict]:
    """Each row's figure, computed from the measurements (None where a measurement is missing)."""
    speed = speed or {}
    defaults, memory, best = speed.get("defaults") or {}, speed.get("memory") or {}, speed.get("best") or []
    train = rate(defaults.get("train_images"), defaults.get("train_s"))
    evaluation = rate(defaults.get("eval_images"), defaults.get("eval_s"))
    best_rates = [(rate(r.get("train_images"), r.get("train_s")), r) for r in best]
    best_rates = [(value, r) for value, r in best_rates if value]
    top = max(best_rates, key=lambda pair: pair[0], default=(None, {}))
    peak = memory.get("train_peak_bytes")

    def end_to_end_row(result: Optional[dict]) -> tuple[Optional[float], str]:
        if not result:
            return None, ""
        images = result["train_images"] + result["eval_images"]
        seconds = result["train_s"] + result["eval_s"]
        how = (f"{result['train_images']:,} + {result['eval_images']:,} images, batch {result['batch']}, "
               f"amp {result['amp']}, {310 * seconds / 60:.1f} min for 310 epochs")
        if result.get("data_only_images_per_s"):  # where the loop loses time: the loaders alone, the first epoch
            how += f"; loaders alone {result['data_only_images_per_s']:,.0f} img/s, first epoch {result['first_epoch_s']} s"
        return images / seconds, how

    def run_row(result: Optional[dict]) -> tuple[Optional[float], str]:
        if not result or not result.get("epoch_periods_s"):
            return None, ""
        period = statistics.median(result["epoch_periods_s"])
        how = (f"`{result['command']}`, {result['train_images']:,} + {result['eval_images']:,} images, an epoch "
               f"every {period:.2f} s from the run's log ({len(result['epoch_periods_s'])} timed), "
               f"{310 * period / 60:.1f} min for 310 epochs")
        if result.get("train_and_eval_s") is not None:  # the rest is what the run does between epochs
            how += f"; training and evaluation {result['train_and_eval_s']} s of it"
        if result.get("first_epoch_s") is not None:
            how += f", first epoch {result['first_epoch_s']} s"
        return (result["train_images"] + result["eval_images"]) / period, how

    e2e_r, e2e_r_how = run_row(run)
    e2e_d, e2e_d_how = end_to_end_row(e2e_defaults)
    e2e_b, e2e_b_how = end_to_end_row(e2e_best)
    small, memory_batch = defaults.get("batch", 64), memory.get("batch", 256)  # smaller in a --quick run
    compiled = (f"; {defaults.get('graphs_compiled')} graphs, first steps {defaults['first_steps_s']} s"
                if defaults.get("compile", "off") != "off" else "")
    return [
        dict(key="train_defaults", setting=f"train, batch {small}, fp32, no flags", value=train, unit="img/s",
             how=f"{defaults.get('train_images', 0):,} images, compile {defaults.get('compile')}{compiled}"
             if train else ""),
        dict(key="train_best", setting="train, best setting (bf16, batch <= 1024)", value=top[0], unit="img/s",
             how=(f"batch {top[1]['batch']}; " + ", ".join(f"b{r['batch']} {v:,.0f}" for v, r in best_rates))
             if top[0] else ""),
        dict(key="peak_memory", setting=f"peak memory, batch {memory_batch}, fp32", value=peak / 1e9 if peak else None,
             unit="GB", how="torch.cuda.max_memory_allocated" if peak else ""),
        dict(key="eval_over_train", setting=f"eval / train at batch {small}", value=evaluation / train if evaluation and train else None,
             unit="x", how=f"eval {evaluation:,.0f} img/s" if evaluation else ""),
        dict(key="end_to_end", setting="end to end, the study's command as run (the defaults)", value=e2e_r,
             unit="img/s", how=e2e_r_how),
        dict(key="end_to_end", setting="end to end (train + eval epoch), the defaults", value=e2e_d, unit="img/s",
             how=e2e_d_how),
        dict(key="end_to_end", setting="end to end (train + eval epoch), best setting", value=e2e_b, unit="img/s",
             how=e2e_b_how),
    ]


def met(key: str, value: Optional[float]) -> str:
    if value is None:
        return "not measured"
    comparison, target = TARGETS[key]
    return "yes" if (value >= target if comparison == ">=" else value <= target) else "no"


def format_value(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "GB":
        return f"{value:.2f} GB"
    return f"{value:,.0f} {unit}"


def print_table(rows: list[dict], environment: Optional[dict]) -> None:
    where = f"{environment['device']}, torch {environment['torch']}" if environment else "device unknown"
    print(f"speed of `spikedriven train -c conf/cifar10/2_256_300E_t4.yml --spike-mode if_soft` ({where})")
    print("| setting | original code | ours | target | met | measured |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        comparison, target = TARGETS[row["key"]]
        target_text = f"{comparison} {format_value(target, row['unit'])}"
        print(f"| {row['setting']} | {ORIGINAL[row['key']]} | {format_value(row['value'], row['unit'])} | "
              f"{target_text} | {met(row['key'], row['value'])} | {row['how']} |")


def report_folder(folder: Path) -> None:
    speed = read_json(folder / "speed_table.json")
    rows = table_rows(speed, read_json(folder / "end_to_end_defaults.json"), read_json(folder / "end_to_end_best.json"),
                      read_json(folder / "run_rate.json"))
    print_table(rows, (speed or {}).get("environment"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=30, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps per row (they compile)")
    p.add_argument("--best-batches", type=int, nargs="+", default=[1024, 256], help="bf16 batch sizes tried for the best row")
    p.add_argument("--quick", action="store_true", help="a small model at batches 8-32 and 2 steps: a CPU smoke run")
    p.add_argument("--json", help="write the measurements here (after each row)")
    p.add_argument("--report", metavar="DIR", type=Path, help="print the table from DIR's JSON files; measure nothing")
    args = p.parse_args(argv)
    if args.report:
        report_folder(args.report)
        return 0
    if args.quick:
        args.steps, args.warmup = 2, 1
    report = measure_all(args)
    print_table(table_rows(report, None, None), report["environment"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
