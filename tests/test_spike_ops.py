"""Memory-lean spike operations: identical values and gradients, less kept for backward."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model_kwargs
from torch import nn

from spikedriven.models.sdt import SpikeDrivenTransformer
from spikedriven.neurons import NEURONS, NeuronSpec, SpikingNeuron, create_neuron
from spikedriven.spike_ops import (
    BACKWARD_MEMORY, SpikeConv2d, SpikeMaxPool2d, keep_full_tensors, memory_mode, norm_neuron, norm_then, saved_tensor_bytes,
    set_backward_memory, spike_conv2d, spike_max_pool2d, spike_mul,
)

# "auto" keeps full tensors on CPU; these tests ask for the lean operations there
LEAN = "lean"


def spikes(*shape, rate=0.3):
    return (torch.rand(shape) < rate).float()


def grads_of(fn, *inputs, weight):
    inputs = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = fn(*inputs)
    (out * weight).sum().backward()
    return out.detach(), [t.grad for t in inputs]


def assert_same(a, b):
    out_a, grads_a = a
    out_b, grads_b = b
    assert torch.equal(out_a, out_b)
    for ga, gb in zip(grads_a, grads_b):
        assert (ga is None and gb is None) or torch.equal(ga, gb)


@pytest.mark.parametrize("kernel,stride,bias,channels_last", [(1, 1, True, False), (3, 1, False, False), (3, 2, True, True)])
def test_spike_conv_equals_conv(kernel, stride, bias, channels_last):
    x = spikes(6, 5, 9, 9).requires_grad_()
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(7, 5, kernel, kernel, requires_grad=True)
    b = torch.randn(7, requires_grad=True) if bias else None
    inputs = (x, w) + ((b,) if bias else ())
    out_w = torch.randn(F.conv2d(x, w, stride=stride, padding=kernel // 2).shape)

    def with_ops(x, w, b=None):
        return spike_conv2d(x, w, b, stride, kernel // 2, memory=LEAN)

    def plain(x, w, b=None):
        return F.conv2d(x, w, b, stride, kernel // 2)

    assert_same(grads_of(with_ops, *inputs, weight=out_w), grads_of(plain, *inputs, weight=out_w))
    assert saved_tensor_bytes(lambda: with_ops(*inputs)) < saved_tensor_bytes(lambda: plain(*inputs))


def test_spike_conv_under_bf16_autocast_equals_conv():
    x = spikes(4, 8, 6, 6).requires_grad_()
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    out_w = torch.randn(4, 8, 6, 6)

    def run(conv):
        def autocast_conv(x, w):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return conv(x, w, None, 1, 1)
        return autocast_conv

    lean_conv = functools.partial(spike_conv2d, memory=LEAN)
    a, b = grads_of(run(lean_conv), x, w, weight=out_w), grads_of(run(F.conv2d), x, w, weight=out_w)
    assert a[0].dtype == torch.bfloat16 and a[1][1].dtype == torch.float32
    assert_same(a, b)


def test_spike_max_pool_and_mul_equal_plain_ops():
    x = spikes(4, 3, 8, 8).requires_grad_()
    w = torch.randn(4, 3, 4, 4)
    assert_same(grads_of(lambda x: spike_max_pool2d(x, 3, 2, 1, memory=LEAN), x, weight=w),
                grads_of(lambda x: F.max_pool2d(x, 3, 2, 1), x, weight=w))
    # broadcasting as in attention: [T, B, heads, d, N] * [T, B, heads, d, 1]
    a, b = spikes(2, 3, 4, 5, 6).requires_grad_(), spikes(2, 3, 4, 5, 1).requires_grad_()
    w = torch.randn(2, 3, 4, 5, 6)
    lean_mul = functools.partial(spike_mul, memory=LEAN)
    assert_same(grads_of(lean_mul, a, b, weight=w), grads_of(torch.mul, a, b, weight=w))
    assert saved_tensor_bytes(lambda: lean_mul(a, b)) * 4 == saved_tensor_bytes(lambda: a * b)
    # a layer's own mode: "auto" is full on CPU, and lean is asked for per layer
    assert saved_tensor_bytes(lambda: spike_mul(a, b)) == saved_tensor_bytes(lambda: a * b)


@pytest.mark.parametrize("mode", ["lif", "if", "if_soft"])
def test_norm_then_equals_norm_and_neuron(mode):
    neuron = create_neuron(NeuronSpec(mode=mode))
    norm = nn.BatchNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-0.5, 0.5)
    plain_norm = copy.deepcopy(norm)
    x = (torch.randn(3, 4, 6, 5, 5) * 2).requires_grad_()
    w = torch.randn(3, 4, 6, 5, 5)

    def lean(x):
        return norm_then(x, norm, neuron.multi_step, memory=LEAN)

    def plain(x):
        return neuron.multi_step(plain_norm(x.flatten(0, 1)).reshape(x.shape))

    assert_same(grads_of(lean, x, weight=w), grads_of(plain, x, weight=w))
    for p, q in zip(norm.parameters(), plain_norm.parameters()):
        assert torch.equal(p.grad, q.grad)
    for name, buf in norm.named_buffers():  # statistics moved once, as by the module
        assert torch.equal(buf, dict(plain_norm.named_buffers())[name]), name
    assert saved_tensor_bytes(lambda: lean(x)) < 0.6 * saved_tensor_bytes(lambda: plain(x))


def test_norm_then_recomputes_under_the_forward_autocast():
    neuron = create_neuron(NeuronSpec(mode="if_soft"))
    norm, plain_norm = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    x = torch.randn(2, 3, 4, 4, 4).requires_grad_()
    w = torch.randn(2, 3, 4, 4, 4)

    def run(fn):
        def wrapped(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(x.to(torch.bfloat16))
        return wrapped

    lean = run(lambda x: norm_then(x, norm, neuron.multi_step, memory=LEAN))
    plain = run(lambda x: neuron.multi_step(plain_norm(x.flatten(0, 1)).reshape(x.shape)))
    assert_same(grads_of(lean, x, weight=w), grads_of(plain, x, weight=w))


@pytest.mark.parametrize("mode,share", [("lean", 0.6), ("min", 0.3)])
@pytest.mark.parametrize("spike_mode,mlp_ratio", [*((name, 4.0) for name in NEURONS), ("lif", 1.0)])
def test_model_with_lean_ops_equals_plain_model(mode, share, spike_mode, mlp_ratio):
    """Every registered neuron: the same logits, gradients (a learnable leak's and threshold's too) and
    batch-norm statistics with the lean and min backward as with full tensors."""
    torch.manual_seed(0)
    lean = SpikeDrivenTransformer(**tiny_model_kwargs(depth=2, spike_mode=spike_mode, mlp_ratio=mlp_ratio))
    plain = copy.deepcopy(lean)
    images = torch.randn(4, 3, 16, 16)

    def step(model):
        logits = model(images)
        logits.square().sum().backward()
        return logits.detach()

    set_backward_memory(lean, mode)
    lean_bytes = saved_tensor_bytes(lambda: lean(images))
    logits = step(lean)
    with keep_full_tensors(plain):
        plain_bytes = saved_tensor_bytes(lambda: plain(images))
        assert torch.equal(logits, step(plain))
    for (name, p), q in zip(lean.named_parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad), name
    for (name, buf), other in zip(lean.named_buffers(), plain.buffers()):
        assert torch.equal(buf, other), name
    # the published 2-256 model at batch 256 keeps 39 % (lean) and 13 % (min) (see the benchmark)
    assert lean_bytes < share * plain_bytes


@pytest.mark.parametrize("first_layer", ["spike_conv", "pool_then_spike_conv", "image_conv"])
@pytest.mark.parametrize("amp", [False, True])
def test_min_mode_recomputes_the_convolution_exactly(first_layer, amp):
    """norm_neuron with pre layers: in "min" only the input is kept (bool for spikes), nothing else changes."""
    torch.manual_seed(0)
    neuron = create_neuron(NeuronSpec(mode="lif"))
    conv_type = nn.Conv2d if first_layer == "image_conv" else SpikeConv2d
    conv, norm = conv_type(5, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6)
    pool = SpikeMaxPool2d(3, 2, 1) if first_layer == "pool_then_spike_conv" else nn.Identity()
    twins = [copy.deepcopy(m) for m in (pool, conv, norm)]
    x = torch.randn(3, 4, 5, 8, 8) if first_layer == "image_conv" else spikes(3, 4, 5, 8, 8)
    x = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()

    def chain(pool, conv, norm, mode):
        def run(x):
            with memory_mode(conv, mode), memory_mode(pool, mode), \
                    torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                return norm_neuron(x, norm, neuron, pre=(pool, conv), memory=mode)
        return run

    out_shape = chain(*[copy.deepcopy(m) for m in twins], "full")(x).shape
    w = torch.randn(out_shape)
    assert_same(grads_of(chain(pool, conv, norm, "min"), x, weight=w), grads_of(chain(*twins, "full"), x, weight=w))
    for (name, a), b in zip([*conv.named_parameters(), *norm.named_parameters()], [*twins[1].parameters(), *twins[2].parameters()]):
        assert a.grad is not None and torch.equal(a.grad, b.grad), name
    for (name, a), b in zip(norm.named_buffers(), twins[2].buffers()):  # statistics moved once
        assert torch.equal(a, b), name
    kept = {mode: saved_tensor_bytes(lambda: chain(pool, conv, norm, mode)(x)) for mode in ("min", "lean")}
    assert kept["min"] < kept["lean"]
    if first_layer != "image_conv":  # spikes kept as bool: 1 byte each, plus the parameters
        params = sum(p.numel() * 4 for m in (conv, norm) for p in m.parameters())
        assert kept["min"] == x.numel() + params


def test_a_neuron_takes_only_its_input_current():
    """The layers before a neuron are norm_neuron's, never the neuron's own arguments."""
    neuron = create_neuron(NeuronSpec(mode="lif"))
    with pytest.raises(TypeError):
        neuron(spikes(2, 3, 4, 5, 5), pre=(nn.Identity(),))
    with pytest.raises(TypeError):
        neuron(spikes(2, 3, 4, 5, 5), norm=nn.BatchNorm2d(4))
    assert not hasattr(neuron, "backward_memory")


@pytest.mark.parametrize("mode", ["full", "lean", "min"])
def test_norm_neuron_calls_the_neuron_once_and_counts_its_spikes_once(mode):
    """In every memory mode the neuron runs as a module once per call (its hooks see its spikes) and tallies
    them once, though backward runs its steps again; spikes and gradients are the plain chain's."""
    torch.manual_seed(0)
    neuron = create_neuron(NeuronSpec(mode="plif"))  # a learnable leak: its gradient comes through the recomputation
    conv, norm = SpikeConv2d(5, 6, 3, padding=1), nn.BatchNorm2d(6)
    twins = [copy.deepcopy(m) for m in (neuron, conv, norm)]
    x = spikes(3, 4, 5, 6, 6).requires_grad_()
    w = torch.randn(3, 4, 6, 6, 6)
    seen = []
    neuron.register_forward_hook(lambda module, inputs, output: seen.append(output.detach().clone()))
    neuron.tally_spikes = True

    def fused(x):
        with memory_mode(conv, mode):
            return norm_neuron(x, norm, neuron, pre=(conv,), memory=mode)

    def plain(x):
        plain_neuron, plain_conv, plain_norm = twins
        with memory_mode(plain_conv, "full"):
            z = per_frame(plain_conv, x)
            return plain_neuron(per_frame(plain_norm, z))

    fused_run = grads_of(fused, x, weight=w)
    assert_same(fused_run, grads_of(plain, x, weight=w))
    assert len(seen) == 1 and torch.equal(seen[0], fused_run[0])
    assert torch.equal(neuron.spike_tally, neuron.tally(fused_run[0]))
    for (name, a), b in zip([*neuron.named_parameters(), *conv.named_parameters(), *norm.named_parameters()],
                            [*twins[0].parameters(), *twins[1].parameters(), *twins[2].parameters()]):
        assert a.grad is not None and torch.equal(a.grad, b.grad), name


def per_frame(layer, x):
    y = layer(x.flatten(0, 1))
    return y.reshape(*x.shape[:2], *y.shape[1:])


def test_compiled_model_with_lean_ops_matches_eager():
    torch.manual_seed(0)
    model = SpikeDrivenTransformer(**tiny_model_kwargs())
    twin = copy.deepcopy(model)
    images = torch.randn(3, 3, 16, 16)
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    eager_logits, compiled_logits = model(images), compiled(images)
    torch.testing.assert_close(compiled_logits, eager_logits)
    eager_logits.square().sum().backward()
    compiled_logits.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_memory_mode_auto_keeps_full_tensors_on_cpu_and_rejects_unknown_modes():
    model = SpikeDrivenTransformer(**tiny_model_kwargs())
    images = torch.randn(2, 3, 16, 16)
    layers = [m for m in model.modules() if hasattr(m, "backward_memory")]
    assert {m.backward_memory for m in layers} == {"auto"}  # a new model's layers
    assert layers == BACKWARD_MEMORY.layers(model)  # found by their declared classes
    auto = saved_tensor_bytes(lambda: model(images))
    with keep_full_tensors(model):
        full = saved_tensor_bytes(lambda: model(images))
    assert auto == full
    with memory_mode(model, "lean"):
        assert {m.backward_memory for m in layers} == {"lean"}
        assert saved_tensor_bytes(lambda: model(images)) < 0.6 * full
    assert {m.backward_memory for m in layers} == {"auto"}  # each layer's own setting came back
    # every layer that calls the operations takes the mode: the blocks (for their norm_neuron / norm_then
    # calls), the spike layers; a neuron holds none (the block that fuses it with its batch norm does)
    assert {type(m).__name__ for m in layers} >= {"SpikingPatchSplit", "SpikeDrivenSelfAttention", "SpikingMLP",
                                                   "SpikeConv2d"}
    assert not any(isinstance(m, SpikingNeuron) for m in layers)
    with pytest.raises(ValueError, match="unknown memory mode 'small'; valid memory modes are: auto, min, lean, full"):
        with memory_mode(model, "small"):
            pass
    assert {m.backward_memory for m in layers} == {"auto"}
