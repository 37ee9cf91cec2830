"""Training and evaluation throughput of the SDT: reference neurons vs the fast path.

Both paths run in one process on the same model (the CIFAR-10 2-256 T=4
configuration by default) with synthetic inputs on the device:

* reference: per-step neurons and plain PyTorch operations that keep full
  tensors for backward (``spikedriven.spike_ops.keep_full_tensors``), eager;
* fast: fused neurons (``spikedriven.neurons.fused``: Triton kernels on CUDA), the
  backward-memory mode of ``--backward-memory`` (auto: lean on GPUs, i.e. bool
  spikes and batch norm + neuron recomputed in backward; full on CPU),
  on CUDA channels_last and cuDNN autotuning (the training command's CUDA
  defaults), and with ``--compile`` torch.compile.

A training step is forward, cross-entropy, backward and an AdamW step; the
warm-up steps are not timed. Peak memory is torch.cuda.max_memory_allocated
(not measured on CPU); "saved MiB" is what autograd keeps between forward and
backward in one training forward, counted the same way on every device. A neuron-level check compares the fused neuron with
the reference on the same device before the model runs.

With ``--end-to-end`` it then times the end-to-end epoch of
``benchmarks/end_to_end.py`` (50,000 generated CIFAR-format images with the
study's augmentation and mixup, an evaluation over 10,000; the training
command's defaults) and adds it to the JSON.

    python benchmarks/throughput.py --end-to-end --json throughput.json
    python benchmarks/throughput.py --compile --batch-sizes 64 --precisions bf16
    python benchmarks/throughput.py --quick --end-to-end    # tiny sizes, a CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import platform
import resource
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

import end_to_end  # this folder's end-to-end benchmark
import spikedriven  # noqa: F401  (registers "sdt" with timm)
from spikedriven.engine.loop import autocast
from spikedriven.neurons import NEURONS, NeuronSpec, create_neuron, fused_available, fused_multi_step, set_neuron_path
from spikedriven.spike_ops import MEMORY_MODES, memory_mode, saved_tensor_bytes

PRECISIONS = ("fp32", "bf16")
AMP = {"fp32": "none", "bf16": "bf16"}  # precision -> the config's amp setting
PATHS = ("reference", "fast")
QUICK_MODEL = dict(embed_dim=32, depth=1, img_size=16, time_steps=2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before each measurement")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--backward-memory", choices=MEMORY_MODES, default="auto", help="memory mode of the fast path")
    p.add_argument("--compile-mode", default="default", help='e.g. "reduce-overhead" for CUDA graphs')
    p.add_argument(
        "--quick", action="store_true", help="embed_dim 32, depth 1, 16x16 images, T=2, batch 4, 2 steps: a smoke run"
    )
    p.add_argument("--saved-only", action="store_true",
                   help="only count what autograd keeps for backward (no timing, no neuron check): quick on CPU too")
    p.add_argument("--end-to-end", action="store_true",
                   help="also time the end-to-end epoch (benchmarks/end_to_end.py): 50,000 generated CIFAR images with the "
                        "study's augmentation and mixup, then an evaluation over 10,000, at batch 256 (bf16 if among "
                        "--precisions), the training command's defaults")
    p.add_argument("--workers", default="auto", help="loader workers of --end-to-end: a number, or auto (as a training run chooses)")
    p.add_argument("--config", metavar="YAML", nargs="+",
                   help="measure the models of these configs (DVS, ImageNet ...) instead of the CIFAR 2-256 default")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.steps, args.warmup = [4], 2, 1
    if args.saved_only:
        args.steps = args.warmup = 0
    elif args.compile:
        args.warmup = max(args.warmup, 3)  # compilation happens in the first calls
    return args


# ------------------------------------------------------------------ helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def mark_step(compiled: bool) -> None:
    # CUDA-graph trees (compile mode "reduce-overhead") need to know where an
    # iteration starts to reuse their memory; for other modes this is a no-op.
    if compiled:
        torch.compiler.cudagraph_mark_step_begin()


# ------------------------------------------------------------ measurements


def timed(step, n_warmup: int, n_steps: int, device: torch.device) -> float:
    """Seconds for ``n_steps`` calls of ``step`` after ``n_warmup`` untimed ones."""
    for _ in range(n_warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    sync(device)
    return time.perf_counter() - start


def measure(model, runner, fast: bool, precision: str, batch: int, args, device) -> dict:
    torch.backends.cudnn.benchmark = fast
    memory_format = torch.channels_last if fast and device.type == "cuda" else torch.contiguous_format
    size = (batch, model.in_chans, model.img_size, model.img_size)
    x = torch.randn(size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    compiled = fast and args.compile
    ops = functools.partial(memory_mode, model, args.backward_memory if fast else "full")

    if compiled:
        torch.compiler.reset()  # a fresh compile per setting, clear of earlier settings' graphs
    reset_peak_memory(device)
    optimizer = create_optimizer_v2(model, "adamw", lr=3e-4, weight_decay=0.06)
    model.train()

    def train_step():
        mark_step(compiled)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, AMP[precision]), ops():
            loss = F.cross_entropy(runner(x), y)
        loss.backward()
        optimizer.step()

    train_s = timed(train_step, args.warmup, args.steps, device)
    train_mem = peak_memory_mib(device)

    def forward_only():  # eager, also for a compiled fast path: the compiler's own saving is not visible here
        with autocast(device, AMP[precision]), ops():
            model(x)

    saved_mib = saved_tensor_bytes(forward_only) / 2**20
    optimizer = None  # its state freed before the next setting is measured (train_step, done, holds it too)
    model.zero_grad(set_to_none=True)

    reset_peak_memory(device)
    model.eval()

    def eval_step():
        mark_step(compiled)
        with torch.no_grad(), autocast(device, AMP[precision]):
            runner(x)

    eval_s = timed(eval_step, args.warmup, args.steps, device)
    eval_mem = peak_memory_mib(device)
    model.train()
    return {
        "path": "fast" if fast else "reference",
        "precision": precision,
        "batch": batch,
        "train_images_per_s": batch * args.steps / train_s if args.steps else None,
        "eval_images_per_s": batch * args.steps / eval_s if args.steps else None,
        "train_peak_mem_mib": train_mem,
        "train_saved_mib": saved_mib,
        "eval_peak_mem_mib": eval_mem,
    }


def neuron_check(device: torch.device, shape: tuple[int, ...], n_iter: int) -> list[dict]:
    """Fused vs reference neuron on one tensor: equal spikes, gradient error, fwd+bwd time."""
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for mode in [name for name in NEURONS if create_neuron(name).fused_form() is not None]:
        spec = NeuronSpec(mode=mode)
        x = torch.randn(shape, device=device, generator=gen) * 1.5 + 0.5
        w = torch.randn(shape, device=device, generator=gen)
        reference, fused = create_neuron(spec).to(device), create_neuron(spec).to(device)
        set_neuron_path(reference, "loop")
        result = {"mode": mode, "shape": list(shape), "fused_backend": "triton" if fused_available(x) else "torch"}
        outputs = {}

        def fused_fn(z, fused=fused):
            return fused_multi_step(z, fused.fused_form(), **fused.fused_gradient())

        for name, fn in (("reference", reference), ("fused", fused_fn)):
            xg = x.clone().requires_grad_()

            def fwd_bwd(fn=fn, xg=xg):
                xg.grad = None
                (fn(xg) * w).sum().backward()

            result[f"{name}_fwd_bwd_ms"] = timed(fwd_bwd, 2, n_iter, device) / n_iter * 1e3
            xg.grad = None
            s = fn(xg)
            (s * w).sum().backward()
            outputs[name] = (s.detach(), xg.grad)
        (s_ref, g_ref), (s_fused, g_fused) = outputs["reference"], outputs["fused"]
        result["spikes_equal"] = bool(torch.equal(s_ref, s_fused))
        result["grad_max_abs_err"] = (g_fused - g_ref).abs().max().item()
        result["grad_max_rel_err"] = ((g_fused - g_ref).abs() / g_ref.abs().clamp_min(1e-30)).max().item()
        rows.append(result)
    return rows


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {
        "torch": torch.__version__,
        "triton": triton_version,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["cudnn"] = torch.backends.cudnn.version()
        info["cuda"] = torch.version.cuda
        info["allow_tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        info["allow_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info


# ------------------------------------------------------------------ report


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_rows(columns: list[tuple[str, str]], rows: list[list]) -> None:
    """``columns``: (title, alignment and width) pairs; ``rows``: cells already formatted."""
    print(" ".join(f"{title:{align}}" for title, align in columns))
    for cells in rows:
        print(" ".join(f"{str(cell):{align}}" for cell, (_, align) in zip(cells, columns)))


def print_table(results: list[dict]) -> None:
    reference = {(r["precision"], r["batch"]): r for r in results if r["path"] == "reference"}

    def speedup(r, key):
        ref = reference.get((r["precision"], r["batch"]))
        return _fmt(r[key] / ref[key] if ref and ref[key] else None, ".2f")

    columns = [("path", "<10"), ("prec", "<5"), ("batch", ">5"), ("train img/s", ">12"), ("x ref", ">6"),
               ("eval img/s", ">11"), ("x ref", ">6"), ("saved MiB", ">10"), ("train MiB", ">10"),
               ("eval MiB", ">9")]  # fmt: skip
    rows = [
        [
            r["path"], r["precision"], r["batch"],
            _fmt(r["train_images_per_s"], ".1f"), speedup(r, "train_images_per_s"),
            _fmt(r["eval_images_per_s"], ".1f"), speedup(r, "eval_images_per_s"), f"{r['train_saved_mib']:.1f}",
            _fmt(r["train_peak_mem_mib"], ".0f"), _fmt(r["eval_peak_mem_mib"], ".0f"),
        ]  # fmt: skip
        for r in results
    ]
    print_rows(columns, rows)


def print_neuron_check(rows: list[dict]) -> None:
    columns = [("neuron", "<8"), ("shape", "<22"), ("backend", "<7"), ("spikes==", "<8"),
               ("grad rel err", ">12"), ("ref ms", ">8"), ("fused ms", ">8")]  # fmt: skip
    cells = [
        [
            r["mode"], tuple(r["shape"]), r["fused_backend"], r["spikes_equal"], f"{r['grad_max_rel_err']:.2e}",
            f"{r['reference_fwd_bwd_ms']:.3f}", f"{r['fused_fwd_bwd_ms']:.3f}",
        ]  # fmt: skip
        for r in rows
    ]
    print_rows(columns, cells)


def run_end_to_end(args: argparse.Namespace, device: torch.device) -> dict:
    sizes = dict(train_images=50_000, test_images=10_000, workers=args.workers, batch=256)
    overrides = {"compile": "auto", "backward_memory": args.backward_memory, "device": device.type}
    if args.quick:
        sizes.update(end_to_end.QUICK_SIZES)
        overrides.update(end_to_end.QUICK_OVERRIDES)
    amp = "bf16" if "bf16" in args.precisions else "none"
    print(f"\nend to end: {sizes['train_images']:,} training images (augmentation, mixup), {sizes['test_images']:,} "
          f"evaluated, batch {sizes['batch']}, amp {amp}, workers {sizes['workers']}")
    result = end_to_end.run(**sizes, amp=amp, epochs=2, overrides=overrides)
    end_to_end.print_result(result)
    return result


def measure_configs(args: argparse.Namespace, device: torch.device) -> int:
    """The fast path's training and evaluation speed for the model of each config (its T, size, pooling,
    DVS attention), on a 4-D input the model repeats over T (the compute of a frames input)."""
    from spikedriven.config import load_config

    rows = []
    for path in args.config:
        kwargs = load_config(path, {"amp": "none"}).model_kwargs()
        kwargs["tet"] = False  # the same network; the timing loop's loss takes the mean over steps
        if args.quick:
            kwargs.update(QUICK_MODEL, num_classes=10)
        fast = timm.create_model("sdt", **kwargs).to(device)
        if device.type == "cuda":
            fast = fast.to(memory_format=torch.channels_last)
        set_neuron_path(fast, "fused")
        runner = torch.compile(fast, mode=args.compile_mode, dynamic=False) if args.compile else fast
        for precision in args.precisions:
            for batch in args.batch_sizes:
                r = measure(fast, runner, True, precision, batch, args, device)
                r["config"] = Path(path).name
                rows.append(r)
                print(f"{Path(path).name} T={kwargs['time_steps']} {kwargs['img_size']}px {precision} batch {batch}: "
                      f"{_fmt(r['train_images_per_s'], '.1f')} train img/s, {_fmt(r['eval_images_per_s'], '.1f')} eval img/s, "
                      f"peak {_fmt(r['train_peak_mem_mib'], '.0f')} MiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(device), "results": rows}, f, indent=2)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available")
    torch.manual_seed(args.seed)
    if args.config:
        return measure_configs(args, device)
    model_kwargs = dict(num_classes=10, **(QUICK_MODEL if args.quick else {}))
    env = environment(device)
    print(" ".join(f"{k}={v}" for k, v in env.items() if v is not None))

    # the largest neuron input of the SPS at batch 64: [T, B, D/2, 32, 32]
    check_shape = (4, 2, 16, 8, 8) if args.quick else (4, 64, 128, 32, 32)
    checks = [] if args.saved_only else neuron_check(device, check_shape, n_iter=3 if args.quick else 20)
    if checks:
        print_neuron_check(checks)
        print()

    reference = timm.create_model("sdt", **model_kwargs).to(device)
    set_neuron_path(reference, "loop")
    models = {}
    if "reference" in args.paths:
        models["reference"] = (reference, reference)
    if "fast" in args.paths:
        fast = copy.deepcopy(reference)
        if device.type == "cuda":  # the training command's default: channels-last on CUDA only
            fast = fast.to(memory_format=torch.channels_last)
        set_neuron_path(fast, "fused")
        runner = torch.compile(fast, mode=args.compile_mode, dynamic=False) if args.compile else fast
        models["fast"] = (fast, runner)

    results = []
    for precision in args.precisions:
        for batch in args.batch_sizes:
            for path, (model, runner) in models.items():
                r = measure(model, runner, path == "fast", precision, batch, args, device)
                results.append(r)
                print(f"measured {path} {precision} batch {batch}: {_fmt(r['train_images_per_s'], '.1f')} train img/s",
                      file=sys.stderr)
    print_table(results)
    max_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if device.type == "cpu":
        print(f"peak memory is not measured per run on CPU; process max RSS {max_rss_mib:.0f} MiB")
    e2e = run_end_to_end(args, device) if args.end_to_end else None

    if args.json:
        report = {
            "environment": env,
            "settings": {
                "model": model_kwargs,
                "steps": args.steps,
                "warmup": args.warmup,
                "compile": args.compile,
                "compile_mode": args.compile_mode if args.compile else None,
                "fast_path": f"fused neurons, backward memory {args.backward_memory}, channels_last and cudnn.benchmark on CUDA"
                + (", torch.compile" if args.compile else ""),
                "optimizer": "timm adamw lr=3e-4 weight_decay=0.06",
            },
            "neuron_check": checks,
            "results": results,
            "end_to_end": e2e,
            "process_max_rss_mib": max_rss_mib,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
