"""What only a GPU can show: the fused neurons against the per-step loop on CUDA, the model's two paths,
lean and min backward against full, a bf16 analysis pass, loops that wait for the GPU at sync points
only, loader batches normalised on the GPU as on the CPU, and a short run through the command line
(compiled with CUDA graphs by default).

CI has no GPU: these are skipped there. ``benchmarks/gpu_session.sh`` runs them (``pytest -m gpu``)."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import spikedriven  # noqa: F401
from spikedriven.analysis import analyze
from spikedriven.engine.distributed import DistInfo
from spikedriven.engine.loop import StepOptions, evaluate, train_one_epoch
from spikedriven.models import SpikeDrivenTransformer
from spikedriven.neurons import NEURONS, NeuronSpec, create_neuron, fused_multi_step, set_neuron_path
from spikedriven.spike_ops import memory_mode, saved_tensor_bytes
from spikedriven.testing import write_fake_cifar

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _thresholds(mode: str):
    return (0.8, 1.0, 1.2) if "v_threshold" in NEURONS[mode].settings() else (None,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", list(NEURONS))
def test_a_fused_neuron_matches_its_per_step_loop(mode, dtype):
    gen = torch.Generator(device=CUDA).manual_seed(0)
    for thr in _thresholds(mode):
        spec = NeuronSpec(mode) if thr is None else NeuronSpec(mode, v_threshold=thr)
        x = (torch.randn(4, 64, 256, 8, 8, device=CUDA, generator=gen) * 1.5 + 0.5).to(dtype)
        fast, ref = create_neuron(spec).to(CUDA), create_neuron(spec).to(CUDA)
        set_neuron_path(ref, "loop")
        if fast.fused_form() is None:  # no fused form: its own PyTorch code must run on the GPU
            xg = x.clone().requires_grad_()
            fast(xg).float().sum().backward()
            assert torch.isfinite(xg.grad).all()
            continue
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        s_ref = ref(x1)
        s_fast = fused_multi_step(x2, fast.fused_form(), **fast.fused_gradient())
        w = torch.randn(s_ref.shape, device=CUDA, generator=gen).to(dtype)
        (s_ref * w).float().sum().backward()
        (s_fast * w).float().sum().backward()
        mismatch = (s_ref != s_fast).float().mean().item()
        if dtype == torch.float32:
            assert torch.equal(s_ref, s_fast), f"u_th={thr}: spike mismatch {mismatch:.2e}"
            tol = 1e-6
        else:
            # the loop keeps V in bf16, the kernel in fp32: they differ by rounding (measured on an H200:
            # < 6e-4 of the spikes, gradients within 3e-2)
            assert mismatch < 1e-3, f"u_th={thr}: spike mismatch {mismatch:.2e}"
            tol = 5e-2
        assert torch.isfinite(x2.grad).all()
        assert rel(x2.grad.float(), x1.grad.float()) < tol, f"u_th={thr}"
        for p, q in zip(fast.parameters(), ref.parameters()):  # learned settings (PLIF's tau, a threshold)
            assert rel(p.grad.float(), q.grad.float()) < max(tol, 1e-4), f"u_th={thr}"


@pytest.mark.parametrize("mode", list(NEURONS))
def test_the_model_gives_the_same_outputs_and_gradients_with_fused_neurons(mode):
    torch.manual_seed(0)
    model = SpikeDrivenTransformer(spike_mode=mode).to(CUDA)
    x = torch.randn(32, 3, 32, 32, device=CUDA)
    outs, grads = [], []
    for fused in (False, True):
        set_neuron_path(model, "fused" if fused else "loop")
        model.zero_grad()
        out = model(x)
        out.logsumexp(-1).sum().backward()
        outs.append(out.detach())
        grads.append(model.patch_embed.proj_conv.weight.grad.clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-5), (outs[0] - outs[1]).abs().max().item()
    assert rel(grads[1], grads[0]) < 1e-4
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_lean_and_min_backward_memory_give_full_s_results(amp):
    torch.manual_seed(0)
    model = SpikeDrivenTransformer(spike_mode="if_soft").to(CUDA)
    x = torch.randn(32, 3, 32, 32, device=CUDA)
    runs = {}
    for mode in ("full", "lean", "min"):
        model.zero_grad()
        with memory_mode(model, mode), torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
            saved = saved_tensor_bytes(lambda: model(x))
            out = model(x)
        out.float().logsumexp(-1).sum().backward()
        runs[mode] = (out.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()]), saved)
    out_f, grad_f, saved_f = runs["full"]
    for mode in ("lean", "min"):
        out_m, grad_m, saved_m = runs[mode]
        assert torch.equal(out_f, out_m), mode
        # cuDNN may pick other algorithms for the recomputed convolutions: gradients to rounding
        assert rel(grad_m, grad_f) < (1e-5 if amp is None else 1e-2), mode
        assert saved_m < saved_f, f"{mode}: {saved_f / 2**20:.0f} -> {saved_m / 2**20:.0f} MiB"


def test_an_analysis_pass_runs_on_cuda_in_bf16():
    model = SpikeDrivenTransformer(spike_mode="if_soft").to(CUDA)
    # on the device, as the run's batches arrive (data.DeviceBatches places them)
    batches = [(torch.randn(16, 3, 32, 32, device=CUDA), torch.randint(0, 10, (16,), device=CUDA)) for _ in range(2)]
    result = analyze(model, batches, CUDA, amp="bf16")
    assert result["samples"] == 32 and result["totals"]["sops"] > 0


def count_waits(fn) -> int:
    """How often ``fn`` makes the host wait for the GPU (CUDA's sync debug mode warns at each wait)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # one warning per wait, not one per line of code
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in seen)


def test_the_loops_wait_for_the_gpu_at_the_end_only():
    """A wait per batch would leave the GPU idle while the host prepares the next one. A loss window is read a
    sync point after it was sent (copied into pinned memory without waiting), so the training loop waits as
    often with 10 sync points as with 2."""
    from spikedriven.engine.loop import InFlight

    sent = InFlight(torch.arange(5, dtype=torch.float64, device=CUDA), [], 0)
    assert sent.host.is_pinned() and sent.read() == [0.0, 1.0, 2.0, 3.0, 4.0]
    model = SpikeDrivenTransformer(spike_mode="if_soft").to(CUDA)
    batches = [(torch.randn(16, 3, 32, 32, device=CUDA), torch.randint(0, 10, (16,), device=CUDA)) for _ in range(40)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    single = DistInfo()
    train_one_epoch(model, batches[:2], optimizer, loss_fn, StepOptions(device=CUDA), epoch=0)  # first-call set-up aside
    n_train = {every: count_waits(lambda: train_one_epoch(model, batches, optimizer, loss_fn,
                                                          StepOptions(device=CUDA, sync_every=every), epoch=0))
               for every in (4, 20)}
    n_eval = count_waits(lambda: evaluate(model, batches, CUDA, dist=single))
    assert n_train[4] == n_train[20] < len(batches) // 10, f"waits by sync period: {n_train}"
    assert n_eval < len(batches) // 4, f"{n_eval} waits over {len(batches)} batches"


def test_train_and_eval_on_cuda_through_the_command_line(tmp_path):
    write_fake_cifar(tmp_path, "torch/cifar10", n_train=512, n_test=128)
    run = tmp_path / "run"
    base = [sys.executable, "-m", "spikedriven"]
    done = subprocess.run(base + ["train", "-c", str(ROOT / "conf/cifar10/2_256_300E_t4.yml"), "--data-dir", str(tmp_path),
                                  "--epochs", "2", "--warmup-epochs", "1", "--cooldown-epochs", "0", "--amp", "bf16",
                                  "--output", str(run), "--spike-mode", "if_soft"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch.compile mode reduce-overhead (auto)" in (run / "log.txt").read_text()
    done = subprocess.run(base + ["eval", "--checkpoint", str(run / "last.pth.tar")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_compiled_evaluation_with_cuda_graphs_counts_the_spikes_the_eager_model_emits():
    """The per-epoch evaluation of a compiled run: the neurons count inside the CUDA graphs, and a second
    evaluation (the next epoch) replays them without compiling again."""
    import torch._dynamo

    from spikedriven import SpikeRecorder

    from helpers import tiny_model_kwargs

    torch.manual_seed(0)
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode="lif", time_steps=4)).to(CUDA)  # compiles fast
    batches = [(3 * torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))) for _ in range(6)] + \
              [(3 * torch.randn(40, 3, 16, 16), torch.randint(0, 10, (40,)))]  # a partial last batch
    batches = [(images.to(CUDA), labels.to(CUDA)) for images, labels in batches]
    with SpikeRecorder(model) as eager:
        ref = evaluate(model, batches, CUDA)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, mode="reduce-overhead")
    graphs = []
    for _ in range(2):
        with SpikeRecorder(compiled) as rec:
            got = evaluate(compiled, batches, CUDA, cuda_graphs=True)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        assert got["eval_top1"] == pytest.approx(ref["eval_top1"], abs=100 / 424 + 1e-9)  # a sample at most
        assert rec.element_counts == eager.element_counts
        for name, counts in eager.spike_counts.items():  # inductor's fp32 may move a potential across u_th
            assert rel(rec.spike_counts[name], counts) < 1e-3, name
    assert graphs[0] == graphs[1] and not torch._dynamo.utils.counters["graph_break"]


def test_loader_batches_are_normalised_on_the_gpu_with_the_cpus_numbers_and_no_waits(tmp_path):
    """The workers hand on uint8 bytes and the GPU normalises them: bit for bit the CPU's batches (float32
    division is correctly rounded on both), channels-last as the run asks, copied without the host waiting."""
    from spikedriven.config import load_config
    from spikedriven.data import build_datasets, build_eval_loader, build_train_loader

    write_fake_cifar(tmp_path, "torch/cifar10", n_train=96, n_test=40)
    cfg = load_config(ROOT / "conf/cifar10/2_256_300E_t4.yml",
                      {"data_dir": str(tmp_path), "workers": 1, "batch_size": 16, "val_batch_size": 16})
    splits = build_datasets(cfg)
    for build, dataset in ((build_train_loader, splits.train), (build_eval_loader, splits.eval)):
        on_cpu = build(cfg, dataset, device="cpu")
        on_gpu = build(cfg, dataset, device=CUDA, channels_last=True)
        if build is build_train_loader:
            on_cpu.sampler.set_epoch(2)
            on_gpu.sampler.set_epoch(2)
        expected = list(on_cpu)
        got = []
        assert count_waits(lambda: got.extend(on_gpu)) == 0
        assert len(got) == len(expected) > 1
        for (x, y), (x_gpu, y_gpu) in zip(expected, got):
            assert x_gpu.device.type == "cuda" and x_gpu.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(x_gpu.cpu(), x) and torch.equal(y_gpu.cpu(), y)
