"""Neurons: equations against SpikingJelly 0.0.0.0.14 and hand-computed traces."""

import zlib

import pytest
import torch
from spikingjelly.clock_driven import functional, neuron as sj_neuron

from spikedriven import ConfigError, NeuronSpec, create_neuron


def reference_neuron(mode: str, v_threshold: float):
    if mode == "lif":
        return sj_neuron.MultiStepLIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, backend="torch")
    v_reset = 0.0 if mode == "if" else None
    return sj_neuron.MultiStepIFNode(v_threshold=v_threshold, v_reset=v_reset, detach_reset=True, backend="torch")


@pytest.mark.parametrize("mode", ["lif", "if", "if_soft"])
@pytest.mark.parametrize("v_threshold", [0.5, 0.8, 1.0, 1.2])
@pytest.mark.parametrize("T", [1, 4, 6])
@pytest.mark.parametrize("shape", [(3,), (2, 5), (2, 4, 3, 3)])
def test_matches_spikingjelly(mode, v_threshold, T, shape):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((mode, v_threshold, T, shape)).encode()))
    x = (torch.randn(T, *shape, generator=gen) * 1.5 + 0.5).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours = create_neuron({"mode": mode, "v_threshold": v_threshold})
    ref = reference_neuron(mode, v_threshold)
    functional.reset_net(ref)

    s = ours(x)
    s_ref = ref(x_ref)
    assert torch.equal(s, s_ref)
    if s.numel() >= 40:  # the draw exercises both branches
        assert 0 < s.sum() < s.numel()

    weights = torch.randn(s.shape, generator=gen)
    (s * weights).sum().backward()
    (s_ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-12)


# A 5-step input; expected spikes and membrane after reset written out by hand.
TRACE_X = [0.6, 0.6, 0.6, 1.5, 0.0]
HAND_TRACES = {
    # LIF tau=2: H = V + (X - V)/2
    # t0: H=0.3 -> no spike, V=0.3; t1: H=0.45, V=0.45; t2: H=0.525, V=0.525;
    # t3: H=1.0125 -> spike, V=0; t4: H=0 -> V=0
    "lif": ([0, 0, 0, 1, 0], [0.3, 0.45, 0.525, 0.0, 0.0]),
    # IF hard: t0 0.6; t1 1.2 spike -> 0; t2 0.6; t3 2.1 spike -> 0; t4 0
    "if": ([0, 1, 0, 1, 0], [0.6, 0.0, 0.6, 0.0, 0.0]),
    # IF soft: t0 0.6; t1 1.2 spike -> 0.2; t2 0.8; t3 2.3 spike -> 1.3; t4 1.3 spike -> 0.3
    "if_soft": ([0, 1, 0, 1, 1], [0.6, 0.2, 0.8, 1.3, 0.3]),
}


class _MembraneProbe:
    """Wraps a neuron's reset to capture V[t]."""

    def __init__(self, neuron):
        self.values = []
        original = neuron.reset

        def reset(h, spike):
            v = original(h, spike)
            self.values.append(float(v))
            return v

        neuron.reset = reset


@pytest.mark.parametrize("mode", sorted(HAND_TRACES))
def test_hand_computed_trace(mode):
    spikes, membrane = HAND_TRACES[mode]
    n = create_neuron({"mode": mode, "v_threshold": 1.0})
    probe = _MembraneProbe(n)
    out = n(torch.tensor(TRACE_X, dtype=torch.float64).unsqueeze(1))
    assert out.flatten().tolist() == spikes
    assert probe.values == pytest.approx(membrane, abs=1e-12)


def test_no_state_between_calls():
    n = create_neuron("if_soft")
    x = torch.rand(4, 8, 16)
    a = n(x)
    n(torch.full_like(x, 5.0))
    assert torch.equal(n(x), a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["lif", "if", "if_soft"])
def test_low_precision_inputs(dtype, mode):
    x = (torch.randn(4, 32, 16) * 2).to(dtype).requires_grad_()
    s = create_neuron(mode)(x)
    assert s.dtype == dtype
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    s.float().sum().backward()
    assert torch.isfinite(x.grad.float()).all()


def test_torch_compile_fullgraph():
    n = create_neuron({"mode": "if_soft", "v_threshold": 0.8})
    x = torch.randn(4, 3, 7, requires_grad=True)
    compiled = torch.compile(n, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    ref = n(x2)
    ref.sum().backward()
    assert torch.equal(out, ref)
    torch.testing.assert_close(x.grad, x2.grad)


def test_atan_surrogate_gradient():
    x = torch.tensor([[0.0], [0.0]], requires_grad=True)  # H - u_th = -1 at t0, ...
    n = create_neuron({"mode": "if_soft", "surrogate": "atan", "surrogate_alpha": 2.0})
    n(x + 0.0).sum().backward()
    # d/dx of atan(pi/2 a (x-1))/pi at x-1 = -1: (a/2) / (1 + (pi/2 a)^2) on step 0,
    # plus step 1 through V = H (no spike): same again at H - 1 = -1
    import math

    g = 1.0 / (1 + math.pi**2)
    assert x.grad[0].item() == pytest.approx(2 * g)
    assert x.grad[1].item() == pytest.approx(g)


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"mode": "lifx"}, ["lifx", "lif, if, if_soft"]),
        ({"mode": "if", "surrogate": "relu"}, ["relu", "sigmoid"]),
        ({"mode": "if", "v_threshold": -1.0}, ["v_threshold"]),
        ({"mode": "if", "v_threshold": True}, ["v_threshold"]),
        ({"mode": "lif", "tau": 0.5}, ["tau"]),
        ({"mode": "if_soft", "v_reset": 0.0}, ["soft reset"]),
        ({"mode": "if", "surrogate_alpha": 0}, ["surrogate_alpha"]),
        ({"mode": "if", "thresh": 1.0}, ["thresh", "v_threshold"]),
    ],
)
def test_invalid_spec_is_a_clear_value_error(spec, words):
    with pytest.raises(ValueError) as info:
        create_neuron(spec)
    assert isinstance(info.value, ConfigError)
    for word in words:
        assert word in str(info.value)


def test_spec_defaults_and_reset():
    assert NeuronSpec("lif").resolved_v_reset == 0.0
    assert NeuronSpec("if").resolved_v_reset == 0.0
    assert NeuronSpec("if_soft").resolved_v_reset is None
    assert NeuronSpec("if", v_reset=-0.5).resolved_v_reset == -0.5
