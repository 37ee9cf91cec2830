"""Fused multi-step neuron against the per-step reference neuron.

The PyTorch path runs here directly. The Triton kernels run on CPU under the
Triton interpreter, which must be switched on before Triton is imported, so
that test reruns this file as a script in a subprocess; on a CUDA machine the
kernels are also tested on the GPU.
"""

import itertools
import os
import subprocess
import sys
import zlib

import pytest
import torch

from spikedriven import NeuronSpec, create_neuron
from spikedriven.neurons import NEURONS, fused_available, fused_multi_step, fused_neuron, set_neuron_path

try:
    import triton  # noqa: F401

    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

# every registered neuron that declares a fused form (a new one is tested without being listed here)
FUSED = [name for name in NEURONS if create_neuron(name).fused_form() is not None]
CUDA = torch.cuda.is_available() and HAVE_TRITON


def reference_neuron(spec):
    """The per-step loop, also where the fused kernels would be picked by default."""
    neuron = create_neuron(spec)
    set_neuron_path(neuron, "loop")
    return neuron


def draw(shape, seed_key, dtype=torch.float32, device="cpu"):
    """Input currents around the threshold, the same on every run."""
    gen = torch.Generator().manual_seed(zlib.crc32(repr(seed_key).encode()))
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.5).to(dtype=dtype, device=device)


def run_both(spec, x, backend="auto"):
    """Spikes, input gradients and learnable-parameter gradients of the fused neuron and of the loop, for one loss."""
    fused, ref = create_neuron(spec).to(x.device), reference_neuron(spec).to(x.device)
    if x.dtype == torch.float64:
        fused, ref = fused.double(), ref.double()
    x_fused = x.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    s_fused = fused_multi_step(x_fused, fused.fused_form(), backend=backend, **fused.fused_gradient())
    s_ref = ref(x_ref)
    weights = draw(x.shape, "weights", dtype=x.dtype, device=x.device)
    (s_fused * weights).sum().backward()
    (s_ref * weights).sum().backward()
    params = [(p.grad, q.grad) for p, q in zip(fused.parameters(), ref.parameters())]
    return s_fused, x_fused.grad, s_ref, x_ref.grad, params


def assert_grad_close(grad, grad_ref, scale_tol=None):
    """rtol 1e-6; with ``scale_tol``, also an absolute tolerance relative to the largest gradient."""
    atol = 1e-12 if scale_tol is None else scale_tol * grad_ref.abs().max().item()
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=atol)


def input_grad_tol(mode):
    """None (rtol 1e-6 per element) where the fused arithmetic is the loop's; a learnable leak's product
    k (X - V) rounds one ulp apart on some elements in fp32 (float64 agrees to 1e-17), so there the
    tolerance is relative to the largest gradient."""
    return 1e-7 if list(create_neuron(mode).parameters()) else None


def assert_param_grads_close(params, rtol=1e-5):
    """A learnable leak's or threshold's gradient sums over every neuron and step: in fp32 the loop's sum and
    the fused one round differently (the fused adds its partial sums in float64)."""
    for grad, grad_ref in params:
        assert grad is not None and grad_ref is not None
        torch.testing.assert_close(grad, grad_ref, rtol=rtol, atol=rtol * grad_ref.abs().item() + 1e-12)


@pytest.mark.parametrize("mode", FUSED)
@pytest.mark.parametrize("v_threshold", [0.5, 1.0, 1.2])
@pytest.mark.parametrize("T", [1, 3, 4])
@pytest.mark.parametrize("shape", [(6,), (2, 3, 5), (2, 4, 3, 3)])
def test_matches_reference(mode, v_threshold, T, shape):
    spec = NeuronSpec(mode, v_threshold=v_threshold)
    x = draw((T, *shape), (mode, v_threshold, T, shape))
    s, grad, s_ref, grad_ref, params = run_both(spec, x)
    assert s.dtype == x.dtype and s.shape == x.shape
    assert torch.equal(s, s_ref)
    assert_grad_close(grad, grad_ref, input_grad_tol(mode))
    assert_param_grads_close(params)


SETTINGS = [
    dict(surrogate="atan"),
    dict(surrogate="atan", surrogate_alpha=2.0),
    dict(surrogate="piecewise_quadratic"),
    dict(surrogate="erf", surrogate_alpha=1.5),
    dict(surrogate="soft_sign"),
    dict(surrogate="rect", surrogate_alpha=0.7),
    dict(tau=3.0),
    dict(v_reset=-0.3),
    dict(v_reset=-0.3, tau=3.0, surrogate="atan"),
]


@pytest.mark.parametrize("mode", FUSED)
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_other_settings_match_reference(mode, settings):
    if set(settings) - set(NEURONS[mode].settings()):
        pytest.skip(f"{mode} takes no {', '.join(set(settings) - set(NEURONS[mode].settings()))}")
    spec = NeuronSpec(mode, **settings)
    x = draw((4, 3, 7, 5), (mode, settings))
    s, grad, s_ref, grad_ref, params = run_both(spec, x)
    assert torch.equal(s, s_ref)
    assert_grad_close(grad, grad_ref, input_grad_tol(mode))
    assert_param_grads_close(params)


@pytest.mark.parametrize("mode", FUSED)
@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
def test_gradient_through_the_reset(mode, surrogate):
    """detach_reset=False: the same math in float64; fp32 sums its terms in another order."""
    spec = NeuronSpec(mode, surrogate=surrogate, detach_reset=False)
    for dtype, scale_tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        x = draw((4, 3, 7, 5), (mode, surrogate), dtype=dtype)
        s, grad, s_ref, grad_ref, params = run_both(spec, x)
        assert torch.equal(s, s_ref)
        assert_grad_close(grad, grad_ref, scale_tol)
        assert_param_grads_close(params, rtol=1e-10 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", FUSED)
def test_half_precision_is_computed_in_fp32(mode, dtype):
    spec = NeuronSpec(mode)
    x = draw((4, 2, 8, 5, 5), (mode, str(dtype)), dtype=dtype).requires_grad_()
    s = fused_neuron(x, spec)
    assert s.dtype == dtype
    # the same spikes as the fp32 reference on the same (rounded) input values
    x32 = x.detach().float().requires_grad_()
    s32 = reference_neuron(spec)(x32)
    assert torch.equal(s.float(), s32)
    weights = draw(x.shape, "weights")
    (s.float() * weights).sum().backward()
    (s32 * weights).sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.float(), x32.grad, rtol=2e-2, atol=2e-2 * x32.grad.abs().max().item())


def test_memory_layouts_are_kept_or_copied():
    spec = NeuronSpec(mode="lif")
    base = draw((3, 2, 6, 4, 4), "layout")
    expected, grad_expected, _, _, _ = run_both(spec, base)
    # channels_last images folded into [T, B, C, H, W]: used as they are
    channels_last = base.flatten(0, 1).contiguous(memory_format=torch.channels_last).reshape(base.shape)
    # a time axis that is not outermost, and a broadcast input: copied
    transposed = base.transpose(0, 1).contiguous().transpose(0, 1)
    expanded = base[:, :1].expand_as(base)
    for x in (channels_last, transposed, expanded):
        s, grad, s_ref, grad_ref, _ = run_both(spec, x)
        assert torch.equal(s, s_ref)
        assert_grad_close(grad, grad_ref)
    s, grad, _, _, _ = run_both(spec, channels_last)
    assert torch.equal(s, expected) and torch.equal(grad, grad_expected)


def test_without_grad_nothing_is_kept_for_backward():
    spec = NeuronSpec(mode="if_soft")
    x = draw((4, 5, 6), "no grad")
    reference = reference_neuron(spec)(x)
    assert torch.equal(fused_neuron(x, spec), reference)
    with torch.no_grad():
        assert torch.equal(fused_neuron(x.clone().requires_grad_(), spec), reference)
    assert not fused_neuron(x, spec).requires_grad


def test_input_errors():
    spec = NeuronSpec()
    with pytest.raises(ValueError, match="unknown backend"):
        fused_neuron(torch.zeros(2, 3), spec, backend="cupy")
    with pytest.raises(ValueError, match="time axis"):
        fused_neuron(torch.tensor(1.0), spec)
    with pytest.raises(TypeError, match="floating-point"):
        fused_neuron(torch.zeros(2, 3, dtype=torch.int64), spec)
    if not fused_available(torch.zeros(2, 3)):
        with pytest.raises(RuntimeError, match="Triton"):
            fused_neuron(torch.zeros(2, 3), spec, backend="triton")
    assert not fused_available(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="has no fused form"):
        fused_neuron(torch.zeros(2, 3), "multispike")


@pytest.mark.parametrize("mode", [name for name in NEURONS if name not in FUSED])
def test_a_neuron_without_fused_form_runs_its_own_code_where_kernels_would(mode, monkeypatch):
    """On a GPU the fused kernels are picked for every neuron that has a fused form; one without must not fail."""
    from spikedriven.neurons import base

    monkeypatch.setattr(base, "fused_available", lambda x: True)
    n = create_neuron(mode)
    x = draw((4, 3, 5), mode).requires_grad_()
    n(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mode", FUSED)
def test_compiles_with_fullgraph(mode):
    neuron = create_neuron(mode)

    def loss_and_spikes(x, w):
        s = fused_multi_step(x, neuron.fused_form(), backend="torch", **neuron.fused_gradient())
        return (s * w).sum(), s

    compiled = torch.compile(loss_and_spikes, fullgraph=True, backend="aot_eager")
    x = draw((4, 3, 5), "compile")
    w = draw(x.shape, "weights")
    x_compiled, x_eager = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss, s = compiled(x_compiled, w)
    loss.backward()
    compiled_param_grads = [p.grad.clone() for p in neuron.parameters()]
    neuron.zero_grad()
    loss_eager, s_eager = loss_and_spikes(x_eager, w)
    loss_eager.backward()
    assert torch.equal(s, s_eager)
    assert_grad_close(x_compiled.grad, x_eager.grad)
    for grad, p in zip(compiled_param_grads, neuron.parameters()):
        torch.testing.assert_close(grad, p.grad)


# ------------------------------------------------------------ Triton kernels


def triton_checks(device: str) -> None:
    """The Triton kernels against the reference on ``device``, for every neuron with a fused form; plain asserts."""
    cases = itertools.product(FUSED, ["sigmoid", "atan"], [True, False], [1, 4])
    for mode, surrogate, detach_reset, T in cases:
        settings = dict(surrogate=surrogate, detach_reset=detach_reset)
        if "tau" in NEURONS[mode].settings():
            settings["tau"] = 3.0 if T == 1 else 2.0
        spec = NeuronSpec(mode, **settings)
        x = draw((T, 3, 37, 5), (mode, surrogate, detach_reset, T), device=device)
        s, grad, s_ref, grad_ref, params = run_both(spec, x, backend="triton")
        assert torch.equal(s, s_ref), (mode, surrogate, detach_reset, T)
        assert_grad_close(grad, grad_ref, input_grad_tol(mode) if detach_reset else 1e-6)
        assert_param_grads_close(params)

    for dtype in (torch.float16, torch.bfloat16):
        spec = NeuronSpec(mode="lif")
        x = draw((4, 2, 8, 5, 5), str(dtype), dtype=dtype, device=device)
        s, grad, s_ref, _, _ = run_both(spec, x, backend="triton")
        s_torch, grad_torch, _, _, _ = run_both(spec, x, backend="torch")
        assert s.dtype == dtype and torch.equal(s, s_torch)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, grad_torch, rtol=1e-2, atol=1e-2)

    # channels_last folded into [T, B, C, H, W] keeps its layout; no grad keeps no U
    x = draw((8, 6, 4, 4), "cl", device=device).contiguous(memory_format=torch.channels_last).reshape(4, 2, 6, 4, 4)
    spec = NeuronSpec(mode="if")
    s, grad, s_ref, grad_ref, _ = run_both(spec, x, backend="triton")
    assert s.stride() == x.stride() and torch.equal(s, s_ref)
    with torch.no_grad():
        assert torch.equal(fused_neuron(x, spec, backend="triton"), s_ref)

    # under torch.compile the kernels are reached through custom ops, learnable parameters too
    for mode in ("if", "plif", "if_learnable"):
        neuron = create_neuron(mode).to(device)
        compiled = torch.compile(lambda z: fused_multi_step(z, neuron.fused_form(), backend="triton", **neuron.fused_gradient()),
                                 fullgraph=True, backend="aot_eager")
        x = draw((4, 3, 5), "compile", device=device)
        x_compiled, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        s = compiled(x_compiled)
        s.sum().backward()
        ref = reference_neuron(mode).to(device)
        s_ref = ref(x_ref)
        s_ref.sum().backward()
        assert torch.equal(s, s_ref), mode
        assert_grad_close(x_compiled.grad, x_ref.grad)
        assert_param_grads_close([(p.grad, q.grad) for p, q in zip(neuron.parameters(), ref.parameters())])


@pytest.mark.skipif(not HAVE_TRITON, reason="Triton is not installed")
def test_triton_kernels_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, __file__], env=env, cwd=os.path.dirname(__file__), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "triton interpreter checks passed" in done.stdout


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
def test_triton_kernels_on_gpu():
    triton_checks("cuda")


@pytest.mark.skipif(not CUDA, reason="needs CUDA and Triton")
@pytest.mark.parametrize("mode", FUSED)
def test_triton_kernels_on_gpu_at_model_size(mode):
    spec = NeuronSpec(mode=mode)
    x = draw((4, 16, 128, 32, 32), mode, device="cuda")
    s, grad, s_ref, grad_ref, params = run_both(spec, x, backend="triton")
    assert torch.equal(s, s_ref)
    assert_grad_close(grad, grad_ref, input_grad_tol(mode))
    assert_param_grads_close(params, rtol=1e-4)


if __name__ == "__main__":
    if not fused_available(torch.zeros(1)):
        sys.exit("run with TRITON_INTERPRET=1 (set before Triton is imported) to test the kernels on CPU")
    triton_checks("cpu")
    print("triton interpreter checks passed")
