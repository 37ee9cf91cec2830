"""Neurons: equations against SpikingJelly 0.0.0.0.14, hand-computed traces, and what every
registered neuron must do (the tests iterate over the registry, so a new neuron cannot skip them)."""

import math
import zlib

import pytest
import torch
from spikingjelly.clock_driven import functional, neuron as sj_neuron, surrogate as sj_surrogate

from spikedriven import ConfigError, NeuronSpec, create_neuron
from spikedriven.neurons import NEURONS, SURROGATES, resolve_spec


def draw(shape, key, dtype=torch.float32):
    gen = torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.5).to(dtype)


# ------------------------------------------------------------ SpikingJelly


def reference_neuron(mode: str, v_threshold: float):
    """SpikingJelly's neuron for each of ours that it has (detach_reset=True, backend torch)."""
    common = dict(v_threshold=v_threshold, detach_reset=True, backend="torch")
    if mode == "lif":
        return sj_neuron.MultiStepLIFNode(tau=2.0, **common)
    if mode == "lif_soft":
        return sj_neuron.MultiStepLIFNode(tau=2.0, v_reset=None, **common)
    if mode == "plif":
        return sj_neuron.MultiStepParametricLIFNode(init_tau=2.0, **common)
    return sj_neuron.MultiStepIFNode(v_reset=0.0 if mode == "if" else None, **common)


@pytest.mark.parametrize("mode", ["lif", "lif_soft", "if", "if_soft", "plif"])
@pytest.mark.parametrize("v_threshold", [0.5, 1.0, 1.2])
@pytest.mark.parametrize("T", [1, 4, 6])
@pytest.mark.parametrize("shape", [(3,), (2, 5), (2, 4, 3, 3)])
def test_matches_spikingjelly(mode, v_threshold, T, shape):
    x = draw((T, *shape), (mode, v_threshold, T, shape)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours = create_neuron({"mode": mode, "v_threshold": v_threshold})
    ref = reference_neuron(mode, v_threshold)
    functional.reset_net(ref)

    s = ours(x)
    s_ref = ref(x_ref)
    assert torch.equal(s, s_ref)
    if s.numel() >= 40:  # the draw exercises both branches
        assert 0 < s.sum() < s.numel()

    weights = draw(s.shape, "weights")
    (s * weights).sum().backward()
    (s_ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-12)
    if mode == "plif":  # the leak parameter's gradient, through k = sigmoid(w) at every step
        torch.testing.assert_close(ours.w.grad, ref.w.grad, rtol=1e-6, atol=1e-12)


# SpikingJelly's class (or how to get our gradient from it) for each surrogate
SJ_SURROGATES = {
    "sigmoid": lambda a: (sj_surrogate.Sigmoid(alpha=a), 1.0),
    "atan": lambda a: (sj_surrogate.ATan(alpha=a), 1.0),
    "piecewise_quadratic": lambda a: (sj_surrogate.PiecewiseQuadratic(alpha=a), 1.0),
    "erf": lambda a: (sj_surrogate.Erf(alpha=a), 1.0),
    "soft_sign": lambda a: (sj_surrogate.SoftSign(alpha=a), 1.0),
    # the same window, whose backward SpikingJelly gives as 1/w, twice its primitive's slope 1/(2w)
    "rect": lambda a: (sj_surrogate.PiecewiseLeakyReLU(w=1 / (2 * a), c=0.0), 0.5),
}


@pytest.mark.parametrize("name", list(SURROGATES))
@pytest.mark.parametrize("alpha", [None, 0.5, 3.0])
def test_surrogates_match_spikingjelly(name, alpha):
    assert name in SJ_SURROGATES, f"surrogate {name} has no SpikingJelly reference in this test"
    alpha = SURROGATES[name].default_alpha if alpha is None else alpha
    reference, scale = SJ_SURROGATES[name](alpha)
    x = torch.linspace(-3, 3, 601, dtype=torch.float64).requires_grad_()
    x_ref = ((x.detach() + 1.0) - 1.0).requires_grad_()  # what fire(x + 1) compares with u_th = 1, rounding included
    n = create_neuron({"mode": "if_soft", "v_threshold": 1.0, "surrogate": name, "surrogate_alpha": alpha})
    n.fire(x + 1.0).sum().backward()  # fire(H) sees H - u_th = x
    reference(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad * scale, rtol=1e-12, atol=1e-12)
    assert x.grad.abs().sum() > 0


def test_surrogate_alpha_defaults_to_the_surrogates_own():
    assert resolve_spec({"mode": "if", "surrogate": "atan"}).surrogate_alpha == 2.0
    assert resolve_spec("lif").surrogate_alpha == 4.0
    assert resolve_spec({"mode": "if", "surrogate": "erf", "surrogate_alpha": 1.5}).surrogate_alpha == 1.5


# ------------------------------------------------------------ hand-computed traces

# A 5-step input; expected spikes and membrane after reset written out by hand.
TRACE_X = [0.6, 0.6, 0.6, 1.5, 0.0]
HAND_TRACES = {
    # LIF tau=2: H = V + (X - V)/2
    # t0: H=0.3 -> no spike, V=0.3; t1: H=0.45, V=0.45; t2: H=0.525, V=0.525;
    # t3: H=1.0125 -> spike, V=0; t4: H=0 -> V=0
    "lif": ([0, 0, 0, 1, 0], [0.3, 0.45, 0.525, 0.0, 0.0]),
    # LIF soft: the same to t3, where V = 1.0125 - 1 = 0.0125; t4: H = 0.0125 + (0 - 0.0125)/2 = 0.00625
    "lif_soft": ([0, 0, 0, 1, 0], [0.3, 0.45, 0.525, 0.0125, 0.00625]),
    # PLIF at w = 0 (k = 1/2) is LIF with tau 2
    "plif": ([0, 0, 0, 1, 0], [0.3, 0.45, 0.525, 0.0, 0.0]),
    # IF hard: t0 0.6; t1 1.2 spike -> 0; t2 0.6; t3 2.1 spike -> 0; t4 0
    "if": ([0, 1, 0, 1, 0], [0.6, 0.0, 0.6, 0.0, 0.0]),
    # IF soft: t0 0.6; t1 1.2 spike -> 0.2; t2 0.8; t3 2.3 spike -> 1.3; t4 1.3 spike -> 0.3
    "if_soft": ([0, 1, 0, 1, 1], [0.6, 0.2, 0.8, 1.3, 0.3]),
    # if_learnable at its initial threshold exp(ln 1) = 1: IF soft
    "if_learnable": ([0, 1, 0, 1, 1], [0.6, 0.2, 0.8, 1.3, 0.3]),
}


class _MembraneProbe:
    """Wraps a neuron's reset to capture V[t]."""

    def __init__(self, neuron):
        self.values = []
        original = neuron.reset

        def reset(h, spike):
            v = original(h, spike)
            self.values.append(float(v.detach()))
            return v

        neuron.reset = reset


@pytest.mark.parametrize("mode", sorted(HAND_TRACES))
def test_hand_computed_trace(mode):
    spikes, membrane = HAND_TRACES[mode]
    n = create_neuron({"mode": mode, "v_threshold": 1.0}).double()
    probe = _MembraneProbe(n)
    out = n(torch.tensor(TRACE_X, dtype=torch.float64).unsqueeze(1))
    assert out.flatten().tolist() == spikes
    assert probe.values == pytest.approx(membrane, abs=1e-12)


def test_if_learnable_threshold_gradient_by_hand():
    """u_th = exp(theta) = 0.8, soft reset, sigmoid surrogate a = 4, loss = sum of the spikes.

    X = [0.5, 0.5]: t0 H0 = 0.5, U0 = -0.3, no spike, V0 = 0.5; t1 H1 = 1.0, U1 = 0.2, spike.
    With sg(u) = 4 sig(4u)(1 - sig(4u)) and a detached reset (V1 feeds nothing):
      dL/dH1 = sg(0.2);  dL/dH0 = sg(-0.3) + dL/dH1 (dV0/dH0 = 1, no spike at t0)
      dL/dX1 = sg(0.2);  dL/dX0 = sg(-0.3) + sg(0.2)
      dL/du_th = -sg(-0.3) - sg(0.2)  (the reset terms -dL/dV S vanish: dL/dV1 = 0 and S0 = 0)
      dL/dtheta = dL/du_th * u_th
    """

    def sg(u):
        s = 1 / (1 + math.exp(-4 * u))
        return 4 * s * (1 - s)

    n = create_neuron({"mode": "if_learnable", "v_threshold": 0.8}).double()
    th = float(n.threshold().detach())  # 0.8 as theta = ln 0.8 was rounded to fp32 at creation
    assert th == pytest.approx(0.8, rel=1e-7)
    x = torch.tensor([[0.5], [0.5]], dtype=torch.float64, requires_grad=True)
    out = n(x)
    assert out.flatten().tolist() == [0.0, 1.0]
    out.sum().backward()
    assert x.grad.flatten().tolist() == pytest.approx([sg(0.5 - th) + sg(1.0 - th), sg(1.0 - th)], rel=1e-12)
    assert n.theta.grad.item() == pytest.approx((-sg(0.5 - th) - sg(1.0 - th)) * th, rel=1e-12)
    assert n.learned() == {"v_threshold": pytest.approx(0.8)}


def test_if_learnable_soft_reset_passes_the_threshold_gradient_through_the_reset():
    """X = [1.0, 0.0], u_th = 0.8, loss = S1 only. t0: H0 = 1, spike, V0 = 1 - 0.8 = 0.2;
    t1: H1 = 0.2, U1 = -0.6. dL/dH1 = sg(-0.6); dV0/du_th = -S0 = -1, so
    dL/du_th = -sg(-0.6) [U1] - dL/dV0 S0 = -sg(-0.6) - sg(-0.6)."""

    def sg(u):
        s = 1 / (1 + math.exp(-4 * u))
        return 4 * s * (1 - s)

    n = create_neuron({"mode": "if_learnable", "v_threshold": 0.8}).double()
    th = float(n.threshold().detach())
    x = torch.tensor([[1.0], [0.0]], dtype=torch.float64, requires_grad=True)
    out = n(x)
    assert out.flatten().tolist() == [1.0, 0.0]
    out[1].sum().backward()
    u1 = (1.0 - th) - th  # H1 = V0 = 1 - u_th
    assert n.theta.grad.item() == pytest.approx(-2 * sg(u1) * th, rel=1e-12)


def test_multispike_by_hand():
    """D = 4: S = floor(clamp(X, 0, 4) + 1/2) / 4; dS/dX = 1/4 inside (0, 4), else 0."""
    n = create_neuron({"mode": "multispike", "levels": 4})
    x = torch.tensor([[-0.3], [0.2], [0.5], [1.6], [3.7], [5.0]], requires_grad=True)
    out = n(x)
    assert out.flatten().tolist() == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]  # 0.5 + 0.5 rounds up to level 1
    out.sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 0.25, 0.25, 0.25, 0.25, 0.0]
    assert n.output_levels() == 4


# ------------------------------------------------------------ every registered neuron


def _default_neuron(name):
    return create_neuron(NeuronSpec(name))


@pytest.mark.parametrize("name", list(NEURONS))
def test_every_neuron_declares_itself(name):
    cls = NEURONS[name]
    assert cls.title and cls.equations and cls.ops.describe()
    assert isinstance(cls.leaky, bool)
    n = _default_neuron(name)
    assert n.spec.mode == name and set(n.spec.params) == set(cls.settings())


@pytest.mark.parametrize("name", list(NEURONS))
def test_no_state_between_calls(name):
    n = _default_neuron(name)
    x = draw((4, 8, 16), ("state", name))
    a = n(x)
    n(torch.full_like(x, 5.0))
    assert torch.equal(n(x), a)


@pytest.mark.parametrize("name", list(NEURONS))
def test_spikes_take_the_neurons_levels(name):
    n = _default_neuron(name)
    levels = n.output_levels()
    s = n(draw((4, 64), ("levels", name)) * 3)
    assert torch.equal(s * levels, (s * levels).round()) and s.min() >= 0 and s.max() <= 1
    assert 0 < s.sum() < s.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(NEURONS))
def test_low_precision_inputs(dtype, name):
    n = _default_neuron(name)
    x = (draw((4, 32, 16), ("dtype", name)) * 2).to(dtype).requires_grad_()
    s = n(x)
    assert s.dtype == dtype
    s.float().sum().backward()
    assert torch.isfinite(x.grad.float()).all()
    for p in n.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", list(NEURONS))
def test_torch_compile_fullgraph(name):
    n = _default_neuron(name)
    ref = _default_neuron(name)
    x = draw((4, 3, 7), ("compile", name)).requires_grad_()
    compiled = torch.compile(n, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    expected = ref(x2)
    expected.sum().backward()
    assert torch.equal(out, expected)
    torch.testing.assert_close(x.grad, x2.grad)
    for p, p_ref in zip(n.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad)


@pytest.mark.parametrize("name", list(NEURONS))
def test_learned_settings_survive_the_state_dict(name):
    n = _default_neuron(name)
    for p in n.parameters():
        with torch.no_grad():
            p.add_(0.3)
    m = _default_neuron(name)
    m.load_state_dict(n.state_dict(), strict=True)
    assert m.learned() == n.learned()


# ------------------------------------------------------------ bad settings


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"mode": "lifx"}, ["lifx", ", ".join(NEURONS), "--plugins"]),
        ({"mode": "if", "surrogate": "relu"}, ["relu", "sigmoid", "rect"]),
        ({"mode": "if", "v_threshold": -1.0}, ["v_threshold", "> 0"]),
        ({"mode": "if", "v_threshold": True}, ["v_threshold", "a number"]),
        ({"mode": "lif", "tau": 0.5}, ["tau", ">= 1"]),
        ({"mode": "plif", "tau": 1.0}, ["tau", "> 1"]),
        ({"mode": "if_soft", "v_reset": 0.0}, ["if_soft", "takes no setting v_reset"]),
        ({"mode": "if", "tau": 2.0}, ["takes no setting tau", "v_threshold, surrogate"]),
        ({"mode": "if", "surrogate_alpha": 0}, ["surrogate_alpha"]),
        ({"mode": "if", "thresh": 1.0}, ["thresh", "v_threshold"]),
        ({"mode": "if", "v_reset": 1.5}, ["v_reset", "below v_threshold"]),
        ({"mode": "multispike", "levels": 0}, ["levels", "1 .. 255"]),
        ({"mode": "multispike", "levels": 2.5}, ["levels", "an integer"]),
        ({"mode": "multispike", "v_threshold": 1.0}, ["multispike", "takes no setting v_threshold", "levels"]),
    ],
)
def test_invalid_spec_is_a_clear_value_error(spec, words):
    with pytest.raises(ValueError) as info:
        create_neuron(spec)
    assert isinstance(info.value, ConfigError)
    for word in words:
        assert word in str(info.value)


def test_specs_are_values():
    a = NeuronSpec("if", v_threshold=0.8)
    assert a == NeuronSpec.from_any({"mode": "if", "v_threshold": 0.8}) and hash(a) == hash(NeuronSpec("if", v_threshold=0.8))
    assert a.replace(v_threshold=1.0).v_threshold == 1.0 and a.v_threshold == 0.8
    assert resolve_spec("if").v_reset == 0.0 and resolve_spec("if_learnable").v_reset is None
    with pytest.raises(AttributeError):
        a.v_threshold = 2.0
