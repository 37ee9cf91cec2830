"""CUDA checks that CI (CPU only) cannot run: fused neurons against the reference
on the GPU, the model's forward/backward with both paths, lean against full
backward memory, a bf16 analysis pass, training and evaluation loops that do not
wait for the GPU at every batch, and a short training + evaluation run through
the command line (compiled with CUDA graphs by default).

    python benchmarks/cuda_check.py            # prints one line per check, exits 1 on a failure
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import spikedriven  # noqa: F401
from spikedriven.analysis import analyze
from spikedriven.distributed import DistInfo
from spikedriven.engine import evaluate, train_one_epoch
from spikedriven.neurons import NEURONS, NeuronSpec, SpikingNeuron, create_neuron, fused_available, fused_multi_step
from spikedriven.models import SpikeDrivenTransformer
from spikedriven.spike_ops import memory_mode, saved_tensor_bytes
from spikedriven.testing import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]
FAILURES = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def neuron_checks(device: torch.device) -> None:
    """Every registered neuron: the fused kernels against the per-step loop (or, without a fused form,
    that its own code runs on the GPU)."""
    gen = torch.Generator(device=device).manual_seed(0)
    for mode in NEURONS:
        takes_threshold = "v_threshold" in NEURONS[mode].settings()
        for thr in (0.8, 1.0, 1.2) if takes_threshold else (None,):
            for dtype in (torch.float32, torch.bfloat16):
                spec = NeuronSpec(mode) if thr is None else NeuronSpec(mode, v_threshold=thr)
                label = f"{mode}{'' if thr is None else f' u_th={thr}'} {str(dtype)[6:]}"
                x = (torch.randn(4, 64, 256, 8, 8, device=device, generator=gen) * 1.5 + 0.5).to(dtype)
                fast, ref = create_neuron(spec).to(device), create_neuron(spec).to(device)
                ref.use_fused = False
                if fast.fused_form() is None:
                    xg = x.clone().requires_grad_()
                    fast(xg).float().sum().backward()
                    check(f"no fused form, runs on cuda: {label}", torch.isfinite(xg.grad).all().item())
                    continue
                x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
                s_ref = ref(x1)
                s_fast = fused_multi_step(x2, fast.fused_form(), **fast.fused_gradient())
                w = torch.randn(s_ref.shape, device=device, generator=gen).to(dtype)
                (s_ref * w).float().sum().backward()
                (s_fast * w).float().sum().backward()
                # fp32: exact. bf16: the reference loop keeps V in bf16, the fused kernel in fp32, so they
                # differ by rounding (measured on an H200: < 6e-4 of spikes, gradients within 3e-2).
                same = torch.equal(s_ref, s_fast) if dtype == torch.float32 else (s_ref != s_fast).float().mean().item() < 1e-3
                tol = 1e-6 if dtype == torch.float32 else 5e-2
                err = rel(x2.grad.float(), x1.grad.float())
                param_err = max((rel(p.grad.float(), q.grad.float()) for p, q in zip(fast.parameters(), ref.parameters())),
                                default=0.0)
                check(f"fused {label}", same and err < tol and param_err < max(tol, 1e-4) and torch.isfinite(x2.grad).all().item(),
                      f"grad rel err {err:.2e}, learned-setting grad rel err {param_err:.2e}, "
                      f"spike mismatch {(s_ref != s_fast).float().mean().item():.2e}")


def model_checks(device: torch.device) -> None:
    for mode in NEURONS:
        torch.manual_seed(0)
        model = SpikeDrivenTransformer(spike_mode=mode).to(device)
        x = torch.randn(32, 3, 32, 32, device=device)
        outs, grads = [], []
        for fused in (False, True):
            for m in model.modules():
                if isinstance(m, SpikingNeuron):
                    m.use_fused = fused
            model.zero_grad()
            out = model(x)
            out.logsumexp(-1).sum().backward()
            outs.append(out.detach())
            grads.append(model.patch_embed.proj_conv.weight.grad.clone())
        check(f"model {mode} fused vs reference (fp32)", torch.allclose(outs[0], outs[1], atol=1e-5) and rel(grads[1], grads[0]) < 1e-4,
              f"logit max diff {(outs[0] - outs[1]).abs().max().item():.2e}, grad rel err {rel(grads[1], grads[0]):.2e}")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        check(f"model {mode} bf16 autocast finite", torch.isfinite(out).all().item())


def memory_mode_check(device: torch.device) -> None:
    """Lean backward (bool spikes, recomputed batch norm + neuron) and min (also recomputed
    convolutions) against full tensors on the GPU."""
    for amp in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = SpikeDrivenTransformer(spike_mode="if_soft").to(device)
        x = torch.randn(32, 3, 32, 32, device=device)
        runs = {}
        for mode in ("full", "lean", "min"):
            model.zero_grad()
            with memory_mode(mode), torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
                saved = saved_tensor_bytes(lambda: model(x))
                out = model(x)
            out.float().logsumexp(-1).sum().backward()
            runs[mode] = (out.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()]), saved)
        out_f, grad_f, saved_f = runs["full"]
        for mode in ("lean", "min"):
            out_m, grad_m, saved_m = runs[mode]
            # cuDNN may pick other algorithms for the recomputed convolutions: gradients to rounding
            check(f"{mode} vs full backward memory ({'bf16' if amp else 'fp32'})",
                  torch.equal(out_f, out_m) and rel(grad_m, grad_f) < (1e-5 if amp is None else 1e-2),
                  f"grad rel err {rel(grad_m, grad_f):.2e}, saved {saved_f / 2**20:.0f} -> {saved_m / 2**20:.0f} MiB at batch 32")


def analysis_check(device: torch.device) -> None:
    model = SpikeDrivenTransformer(spike_mode="if_soft").to(device)
    batches = [(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))) for _ in range(2)]
    result = analyze(model, batches, device, amp_dtype=torch.bfloat16)
    check("analysis on cuda with bf16", result["samples"] == 32 and result["totals"]["sops"] > 0,
          f"mean firing {result['mean_firing_rate']:.4f}, SOPs {result['totals']['sops'] / 1e6:.1f} M")


def count_syncs(fn, device: torch.device) -> int:
    """How often ``fn`` makes the host wait for the GPU (CUDA's sync debug mode warns at each wait)."""
    if device.type != "cuda":
        fn()
        return 0
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # one warning per wait, not one per line of code
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in seen)


def sync_check(device: torch.device) -> None:
    """A wait per batch would leave the GPU idle while the host prepares the next one."""
    model = SpikeDrivenTransformer(spike_mode="if_soft").to(device)
    batches = [(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))) for _ in range(40)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    single = DistInfo()
    train_one_epoch(model, batches[:2], optimizer, loss_fn, device, epoch=0, dist=single)  # first-call setup aside
    n_train = count_syncs(lambda: train_one_epoch(model, batches, optimizer, loss_fn, device, epoch=0, dist=single,
                                                  sync_every=20), device)
    n_eval = count_syncs(lambda: evaluate(model, batches, device, dist=single), device)
    check("training waits for the GPU at sync points only", n_train < len(batches) // 2,
          f"{n_train} waits over {len(batches)} steps with a sync point every 20")
    check("evaluation does not wait for the GPU per batch", n_eval < len(batches) // 4, f"{n_eval} waits over {len(batches)} batches")


def cli_check(device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_fake_cifar(tmp, "torch/cifar10", n_train=512, n_test=128)
        out = Path(tmp) / "run"
        base = [sys.executable, "-m", "spikedriven"]
        train = base + ["train", "-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", tmp, "--epochs", "2",
                        "--warmup-epochs", "1", "--cooldown-epochs", "0", "--amp", "bf16",
                        "--output", str(out), "--spike-mode", "if_soft"]
        proc = subprocess.run(train, capture_output=True, text=True)
        compiled = "torch.compile mode reduce-overhead (auto)" in (out / "log.txt").read_text() if out.exists() else False
        check("train on cuda via the CLI (bf16, compile auto)", proc.returncode == 0 and compiled,
              proc.stderr[-400:].replace("\n", " | "))
        proc = subprocess.run(base + ["eval", "--checkpoint", str(out / "last.pth.tar")], capture_output=True, text=True)
        check("eval on cuda via the CLI", proc.returncode == 0, (proc.stdout + proc.stderr)[:300].replace("\n", " | "))


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | fused kernels available: "
          f"{fused_available(torch.zeros(1, device=device))}", flush=True)
    for step in (neuron_checks, model_checks, memory_mode_check, analysis_check, sync_check, cli_check):
        try:
            step(device)
        except Exception as e:  # report and go on: one run of this script must say as much as possible
            check(step.__name__, False, f"{type(e).__name__}: {e}")
    print(f"{len(FAILURES)} failure(s)" + (f": {', '.join(FAILURES)}" if FAILURES else ""))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
