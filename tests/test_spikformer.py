"""Spikformer (both layouts of the original code) against a reference written here from the SPEC's text
(SPEC-architectures sections 0.1 and 1), plus its checkpoints, sizes, memory modes, neurons and counts."""

import argparse
import copy
import functools

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import spikedriven  # noqa: F401  (registers the models with timm)
from spikedriven import ConfigError
from spikedriven.analysis.operations import OperationCounter
from spikedriven.engine.checkpoint import CheckpointError, load_into
from spikedriven.engine.recorder import SpikeRecorder
from spikedriven.models.registry import architecture_of, identify_state_dict
from spikedriven.models.sdt import SpikeDrivenTransformer
from spikedriven.models.spikformer import SPIKFORMER, Spikformer
from spikedriven.neurons import NEURONS, SpikingNeuron, neuron_path
from spikedriven.spike_ops import (attention_products, memory_mode, saved_tensor_bytes, spike_attention, spike_conv1d,
                                   spike_linear)

# small enough for a CPU, large enough that every neuron layer fires (the ImageNet layout pools by 16:
# 64 px leave 16 tokens, where the attention neuron fires; at 32 px, 4 tokens, it does not)
SIZES = {
    "cifar": dict(layout="cifar", img_size=16, embed_dim=32, depth=2, num_heads=4, time_steps=3),
    "imagenet": dict(layout="imagenet", img_size=64, embed_dim=32, depth=2, num_heads=4, time_steps=2),
}


# --------------------------------------------------- the reference, from the SPEC's text


class _Spike(torch.autograd.Function):
    """Heaviside with Θ(0) = 1; backward the sigmoid surrogate, alpha 4 (SPEC 0.1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(x * 4.0)
        return grad * (1.0 - sg) * sg * 4.0


def ref_lif(x, threshold=1.0):
    """LIF over dim 0, tau 2, hard reset to 0, reset detached, V = 0 at the start."""
    v, spikes = 0.0, []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / 2.0
        s = _Spike.apply(h - threshold)
        v = (1.0 - s.detach()) * h
        spikes.append(s)
    return torch.stack(spikes)


def ref_bn(x, p, name, train):
    return F.batch_norm(x, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"], p[f"{name}.bias"],
                        train, 0.1, 1e-5)


def ref_sps(x, p, pools, train):
    """Four conv-BN-LIF stages, each LIF followed by a 3/2/1 max-pool where ``pools`` says; then rpe on the
    pooled spikes, added to them."""
    t, b = x.shape[:2]

    def stage(s, conv, bn):
        y = ref_bn(F.conv2d(s.flatten(0, 1), p[f"patch_embed.{conv}.weight"], padding=1), p, f"patch_embed.{bn}", train)
        return ref_lif(y.reshape(t, b, *y.shape[1:]))

    for i, suffix in enumerate(("", "1", "2", "3")):
        x = stage(x, f"proj_conv{suffix}", f"proj_bn{suffix}")
        if pools[i]:
            y = F.max_pool2d(x.flatten(0, 1), 3, 2, 1)
            x = y.reshape(t, b, *y.shape[1:])
    return stage(x, "rpe_conv", "rpe_bn") + x


def ref_tokens(xf, p, name, train, t, b):
    """CIFAR: Linear on [T*B, N, D], BN1d on its [T*B, D, N] transpose, back, reshape to [T, B, N, D], LIF."""
    y = F.linear(xf, p[f"{name}_linear.weight"], p[f"{name}_linear.bias"])
    y = ref_bn(y.transpose(-1, -2), p, f"{name}_bn", train).transpose(-1, -2)
    return ref_lif(y.reshape(t, b, *y.shape[1:]))


def split_heads(s, heads):
    """Tokens [T, B, N, D] -> [T, B, heads, N, D/heads], channel head * D/heads + j; as a contiguous copy: the
    products' backward sums in another order on the permuted view (an ulp in the gradients)."""
    t, b, n, d = s.shape
    return s.reshape(t, b, n, heads, d // heads).permute(0, 1, 3, 2, 4).contiguous()


def ref_block_cifar(x, p, i, heads, train):
    t, b, n, d = x.shape
    xf = x.flatten(0, 1)
    q, k, v = (split_heads(ref_tokens(xf, p, f"block.{i}.attn.{name}", train, t, b), heads) for name in "qkv")
    y = ((q @ k.transpose(-2, -1)) * 0.125) @ v
    y = ref_lif(y.permute(0, 1, 3, 2, 4).reshape(t, b, n, d), threshold=0.5)
    x = x + ref_tokens(y.flatten(0, 1), p, f"block.{i}.attn.proj", train, t, b)
    hidden = ref_tokens(x.flatten(0, 1), p, f"block.{i}.mlp.fc1", train, t, b)
    return x + ref_tokens(hidden.flatten(0, 1), p, f"block.{i}.mlp.fc2", train, t, b)


def ref_block_imagenet(x, p, i, heads, train):
    t, b, c, height, width = x.shape
    n = height * width
    pre = f"block.{i}"

    def channels(xf, name, bias=None):  # Conv1d k=1 on [T*B, C, N], BN1d, LIF on [T, B, C, N]
        y = ref_bn(F.conv1d(xf, p[f"{pre}.attn.{name}_conv.weight"], bias), p, f"{pre}.attn.{name}_bn", train)
        return ref_lif(y.reshape(t, b, c, n))

    xf = x.flatten(3).flatten(0, 1)
    q, k, v = (split_heads(channels(xf, name).transpose(-1, -2), heads) for name in "qkv")
    y = (q @ (k.transpose(-2, -1) @ v)) * 0.125
    y = ref_lif(y.transpose(3, 4).reshape(t, b, c, n), threshold=0.5)
    x = x + channels(y.flatten(0, 1), "proj", p[f"{pre}.attn.proj_conv.bias"]).reshape(t, b, c, height, width)
    s = x
    for fc in ("fc1", "fc2"):  # Conv2d 1x1 on [T*B, C, H, W], BN2d, LIF
        y = F.conv2d(s.flatten(0, 1), p[f"{pre}.mlp.{fc}_conv.weight"], p[f"{pre}.mlp.{fc}_conv.bias"])
        s = ref_lif(ref_bn(y, p, f"{pre}.mlp.{fc}_bn", train).reshape(t, b, *y.shape[1:]))
    return x + s


def ref_forward(p, image, layout, depth, heads, time_steps, train):
    x = image.unsqueeze(0).repeat(time_steps, 1, 1, 1, 1)
    x = ref_sps(x, p, (False, False, True, True) if layout == "cifar" else (True,) * 4, train)
    if layout == "cifar":
        x = x.flatten(-2).transpose(-1, -2)  # tokens [T, B, N, D]
    for i in range(depth):
        x = (ref_block_cifar if layout == "cifar" else ref_block_imagenet)(x, p, i, heads, train)
    x = x.mean(2) if layout == "cifar" else x.flatten(3).mean(3)
    return F.linear(x.mean(0), p["head.weight"], p["head.bias"])


# --------------------------------------------------------------------- helpers


def firing_weights(model, seed=1):
    """Random batch-norm parameters and statistics under which every layer fires (PyTorch's defaults leave
    the deeper layers silent)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.rand(c, generator=gen) + 0.2
            m.running_mean.data = torch.randn(c, generator=gen) * 0.2
            m.running_var.data = torch.rand(c, generator=gen) + 0.5
    return model


def original_layout(model, prefix=""):
    """The model's weights as the original code writes them: neuron layers named *_lif (they hold nothing
    with LIF), and each block's two dead LayerNorms."""
    sd = {prefix + k.replace("_neuron", "_lif"): v.clone() for k, v in model.state_dict().items()}
    for i in range(len(model.block)):
        for norm in ("norm1", "norm2"):
            sd[f"{prefix}block.{i}.{norm}.weight"] = torch.randn(model.embed_dim)
            sd[f"{prefix}block.{i}.{norm}.bias"] = torch.randn(model.embed_dim)
    return sd


def recorded_args(model, **changed):
    """The model settings cifar10/train.py records in its Namespace."""
    args = dict(dim=model.embed_dim, layer=len(model.block), num_heads=model.block[0].attn.num_heads, mlp_ratio=4,
                img_size=model.img_size, num_classes=model.num_classes, time_step=model.time_steps, patch_size=4,
                model="spikformer")
    return argparse.Namespace(**{**args, **changed})


def images(size, batch=3, seed=2):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 1.5


def step(model, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return logits.detach(), loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


# ----------------------------------------------------------- equal to the reference


@pytest.mark.parametrize("layout", ["cifar", "imagenet"])
def test_equals_the_reference_in_eval_and_training(layout):
    sizes = SIZES[layout]
    source = firing_weights(Spikformer(**sizes))
    ckpt = {"state_dict": original_layout(source, prefix="module."), "args": recorded_args(source), "epoch": 9}
    model = Spikformer(**sizes)
    load_into(model, ckpt, "checkpoint-9.pth.tar")  # the original's layout loads strictly
    p = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k)
         for k, v in original_layout(source).items()}
    x, y = images(sizes["img_size"]), torch.tensor([0, 3, 7])
    args = (layout, sizes["depth"], sizes["num_heads"], sizes["time_steps"])

    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref_forward(p, x, *args, train=False))

    logits, loss, grads = step(model.train(), x, y)
    ref_logits = ref_forward(p, x, *args, train=True)
    ref_loss = F.cross_entropy(ref_logits, y)
    ref_loss.backward()
    assert torch.equal(logits, ref_logits.detach()) and torch.equal(loss, ref_loss.detach())
    for name, grad in grads.items():
        ref = p[name.replace("_neuron", "_lif")].grad
        assert grad.abs().max() > 0, f"{name} got no gradient: the check would be empty"
        assert torch.equal(grad, ref), f"{name}: max |diff| {(grad - ref).abs().max():.3g}"
    for name, value in model.state_dict().items():
        if "running" in name:
            assert torch.equal(value, p[name]), name
        elif "num_batches_tracked" in name:
            assert value == 1, name


@pytest.mark.parametrize("layout", ["cifar", "imagenet"])
def test_memory_modes_and_neuron_paths_give_identical_results(layout):
    sizes = SIZES[layout]
    base = firing_weights(Spikformer(**sizes)).train()
    x, y = images(sizes["img_size"], batch=2), torch.tensor([1, 4])
    results, kept = {}, {}
    for mode in ("full", "lean", "min"):
        model = copy.deepcopy(base)
        with memory_mode(model, mode):
            results[mode] = step(model, x, y), model.state_dict()
        measured = copy.deepcopy(base)
        with memory_mode(measured, mode):
            kept[mode] = saved_tensor_bytes(lambda: measured(x))
    model = copy.deepcopy(base)
    with neuron_path(model, "loop"):
        results["loop"] = step(model, x, y), model.state_dict()
    (logits, loss, grads), stats = results["full"]
    for other in ("lean", "min", "loop"):
        (o_logits, o_loss, o_grads), o_stats = results[other]
        assert torch.equal(logits, o_logits) and torch.equal(loss, o_loss), other
        assert all(torch.equal(grads[k], o_grads[k]) for k in grads), other
        assert all(torch.equal(stats[k], o_stats[k]) for k in stats), other
    assert kept["min"] < kept["lean"] < 0.5 * kept["full"]


def test_the_compiled_cifar_layout_matches_eager():
    # the layout whose batch norms read transposed views, which torch.compile reads as copies (_fire_tokens)
    model = firing_weights(Spikformer(**{**SIZES["cifar"], "depth": 1, "time_steps": 2})).train()
    twin = copy.deepcopy(model)
    x = images(16, batch=2)
    with memory_mode(twin, "lean"):
        compiled_logits = torch.compile(twin, fullgraph=True, backend="aot_eager")(x)
        compiled_logits.square().sum().backward()
    eager_logits = model(x)
    eager_logits.square().sum().backward()
    torch.testing.assert_close(compiled_logits, eager_logits)
    # (atol: a bias before a batch norm has no gradient but rounding noise, up to 5e-7 here)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_spike_counts_are_not_counted_twice_when_backward_recomputes():
    model = firing_weights(Spikformer(**SIZES["cifar"])).train()
    x = images(16, batch=2)
    counts = {}
    for mode in ("full", "lean"):
        with memory_mode(model, mode), SpikeRecorder(model) as recorder:
            F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
        counts[mode] = recorder.spike_counts
    assert counts["full"].keys() == counts["lean"].keys()
    assert all(torch.equal(counts["full"][k], counts["lean"][k]) for k in counts["full"])


@pytest.mark.parametrize("layout", ["cifar", "imagenet"])
@pytest.mark.parametrize("mode", list(NEURONS))
def test_every_neuron_trains_a_step(layout, mode):
    sizes = {**SIZES[layout], "depth": 1, "time_steps": 2, "img_size": 16 if layout == "cifar" else 32}
    model = Spikformer(**sizes, neuron={"mode": mode})
    names = [n for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    assert names and all(n.endswith(("_neuron", "_neuron1", "_neuron2", "_neuron3")) for n in names)
    assert model.block[0].attn.attn_neuron.spec.params.get("v_threshold", 0.5) == 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with memory_mode(model, "min"):
        loss = F.cross_entropy(model(images(sizes["img_size"], batch=2)), torch.tensor([0, 1]))
        loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())


def binary(*shape):
    return (torch.rand(shape) < 0.3).float()


def grads(fn, inputs, out_grad, autocast=False):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fn(*inputs)
    return [out.detach(), *torch.autograd.grad(out, inputs, out_grad.to(out.dtype))]


@pytest.mark.parametrize("case", ["linear 3-d", "linear 4-d, transposed gradient", "linear without bias", "linear bf16",
                                  "conv1d", "attention qk_v", "attention q_kv"])
def test_spike_layers_equal_the_plain_operations_and_keep_less(case):
    if case.startswith("linear"):
        x = binary(2, 3, 5, 16) if "4-d" in case else binary(6, 5, 16)
        weight = [torch.randn(24, 16)] + ([] if "without" in case else [torch.randn(24)])
        inputs, plain = [x, *weight], F.linear
        lean = functools.partial(spike_linear, memory="lean")
        out_grad = torch.randn(*x.shape[:-1], 24)
        if "transposed" in case:  # as a batch norm on the transpose hands it back
            out_grad = out_grad.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif case == "conv1d":
        inputs, plain = [binary(6, 16, 9), torch.randn(24, 16, 1), torch.randn(24)], F.conv1d
        lean, out_grad = functools.partial(spike_conv1d, memory="lean"), torch.randn(6, 24, 9)
    else:
        order = case.split()[1]
        inputs, out_grad = [binary(2, 3, 4, 10, 8) for _ in range(3)], torch.randn(2, 3, 4, 10, 8)
        plain = functools.partial(attention_products, scale=0.125, order=order)
        lean = functools.partial(spike_attention, scale=0.125, order=order, memory="lean")
    autocast = case.endswith("bf16")
    for a, b in zip(grads(lean, inputs, out_grad, autocast), grads(plain, inputs, out_grad, autocast)):
        assert torch.equal(a, b)
    leaves = [t.detach().requires_grad_() for t in inputs]
    assert saved_tensor_bytes(lambda: lean(*leaves)) < saved_tensor_bytes(lambda: plain(*leaves))


# ------------------------------------------------------------------------ checkpoints


def test_checkpoint_settings_and_family_are_checked():
    source = Spikformer(**SIZES["cifar"])
    model = Spikformer(**SIZES["cifar"])
    with pytest.raises(CheckpointError, match="num_heads 8"):
        ckpt = {"state_dict": original_layout(source), "args": recorded_args(source, num_heads=8)}
        load_into(model, ckpt, "checkpoint.pth.tar")
    sdt = SpikeDrivenTransformer(embed_dim=32, depth=2, num_heads=4)
    with pytest.raises(CheckpointError, match="sdt"):
        load_into(model, {"state_dict": sdt.state_dict()}, "sdt.pth.tar")


def test_state_dicts_are_told_apart():
    imagenet = Spikformer(**SIZES["imagenet"])
    assert identify_state_dict(original_layout(Spikformer(**SIZES["cifar"]))) == "spikformer"
    assert identify_state_dict(original_layout(imagenet)) == "spikformer"
    assert SPIKFORMER.matches(imagenet.state_dict())
    assert not SPIKFORMER.matches(SpikeDrivenTransformer(embed_dim=32, depth=1, num_heads=4).state_dict())
    for model in (imagenet, Spikformer(**SIZES["cifar"], spike_mode="plif")):  # PLIF: neuron layers hold w
        converted = SPIKFORMER.original_state_dict(original_layout(model))
        assert converted.keys() == model.state_dict().keys()
    assert "block.0.attn.attn_lif.w" in original_layout(model) and "block.0.attn.attn_neuron.w" in converted


# ------------------------------------------------------------------------ sizes


# SPEC 1.7: (entry point, its arguments) -> total parameters of the original, its dead LayerNorm parameters,
# and the original's state-dict entries (the dead ones: 4 per block)
SPEC_COUNTS = [
    ("spikformer_cifar", {}, 9_330_874, 6_144, 216),
    ("spikformer_cifar", dict(num_classes=100), 9_365_524, 6_144, 216),
    ("spikformer_cifar", dict(embed_dim=256, num_heads=8), 4_159_274, 4_096, 216),
    ("spikformer_cifar", dict(embed_dim=256, num_heads=8, num_classes=100), 4_182_404, 4_096, 216),
    ("spikformer_cifar", dict(depth=2), 5_768_122, 3_072, 124),
    ("spikformer_cifar", dict(depth=2, num_classes=100), 5_802_772, 3_072, 124),
    ("spikformer_8_384", {}, 16_828_312, 12_288, None),
    ("spikformer_6_512", {}, 23_385_640, 12_288, None),
    ("spikformer", {}, 29_705_768, 16_384, 376),
    ("spikformer_8_512", {}, 29_705_768, 16_384, 376),
    ("spikformer_10_512", {}, 36_025_896, 20_480, None),
    ("spikformer_8_768", {}, 66_363_208, 24_576, None),
]


@pytest.mark.parametrize("name,kwargs,total,dead,entries", SPEC_COUNTS)
def test_parameter_counts_are_the_specs_without_the_dead_weights(name, kwargs, total, dead, entries):
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == total - dead
    if entries is not None:
        assert len(model.state_dict()) == entries - 4 * len(model.block)


def test_entry_points_layouts_and_cfgs():
    with torch.device("meta"):
        cifar, imagenet = timm.create_model("spikformer_cifar"), timm.create_model("spikformer_8_768")
    assert (cifar.layout, cifar.img_size, cifar.num_classes, cifar.time_steps) == ("cifar", 32, 10, 4)
    assert (imagenet.layout, imagenet.img_size, imagenet.num_classes) == ("imagenet", 224, 1000)
    assert imagenet.embed_dim == 768 and len(imagenet.block) == 8
    assert cifar.num_features == cifar.head_hidden_size == 384
    cifar_cfg, imagenet_cfg = cifar.pretrained_cfg, imagenet.pretrained_cfg
    assert cifar_cfg["mean"] == (0.4914, 0.4822, 0.4465) and cifar_cfg["input_size"] == (3, 32, 32)
    assert imagenet_cfg["mean"] == (0.485, 0.456, 0.406) and imagenet_cfg["input_size"] == (3, 224, 224)
    assert cifar_cfg["first_conv"] == "patch_embed.proj_conv" and cifar_cfg["classifier"] == "head"
    assert architecture_of("spikformer_10_512") is SPIKFORMER
    assert SPIKFORMER.fixed("spikformer") == {"layout": "imagenet"}
    assert Spikformer.architecture == "spikformer"


@pytest.mark.parametrize("kwargs,words", [
    (dict(embed_dim=36, num_heads=4), "divisible by 8"),
    (dict(embed_dim=32, num_heads=3), "not divisible by num_heads 3"),
    (dict(layout="dvs"), "layout must be one of cifar, imagenet"),
    (dict(depth=0), "depth must be >= 1"),
])
def test_impossible_sizes_are_one_sentence(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        Spikformer(**{**SIZES["cifar"], **kwargs})


@pytest.mark.parametrize("layout", ["cifar", "imagenet"])
def test_shapes_5d_input_tet_and_features(layout):
    sizes = {**SIZES[layout], "depth": 1, "time_steps": 2}
    model = Spikformer(**sizes).eval()
    x = images(sizes["img_size"], batch=2)
    features = model.forward_features(x)
    expected = (2, 2, 4 * 4, 32) if layout == "cifar" else (2, 2, 32, 4, 4)
    assert features.shape == expected
    assert model.forward_head(features, pre_logits=True).shape == (2, 32)
    torch.testing.assert_close(model(x.unsqueeze(1).repeat(1, 2, 1, 1, 1)), model(x), rtol=0, atol=0)
    tet = Spikformer(**sizes, tet=True).eval()
    tet.load_state_dict(model.state_dict())
    assert tet(x).shape == (2, 2, 10)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)


# --------------------------------------------------------------- recorder and operations


def test_spikes_and_operations_of_one_small_block_by_hand():
    # CIFAR layout, 1 block, D 32, 4 heads (d 8), T 2, B 2, 16 px: N = 4 x 4 = 16 tokens; in training mode,
    # where the batch statistics make every layer fire (the counts do not depend on the mode)
    model = firing_weights(Spikformer(layout="cifar", img_size=16, embed_dim=32, depth=1, num_heads=4,
                                      time_steps=2)).train()
    stream = []
    model.block[0].register_forward_pre_hook(lambda m, args: stream.append(args[0]))
    with torch.no_grad(), SpikeRecorder(model, keep_spikes=True) as recorder, OperationCounter(model) as counter:
        model(images(16, batch=2))
    counts, elements = recorder.spike_counts, recorder.element_counts
    for name, spikes in recorder.spikes.items():
        assert torch.equal(counts[name], spikes[0].flatten(1).sum(1).double()), name
    assert elements["patch_embed.proj_neuron"] == 2 * 4 * 16 * 16  # B x D/8 x H x W
    assert elements["patch_embed.proj_neuron3"] == 2 * 32 * 8 * 8
    assert elements["block.0.attn.q_neuron"] == elements["block.0.attn.attn_neuron"] == 2 * 16 * 32  # B x N x D
    assert elements["block.0.mlp.fc1_neuron"] == 2 * 16 * 128
    assert counts["block.0.attn.q_neuron"].sum() > 0 and counts["block.0.mlp.fc2_neuron"].sum() > 0

    layers = {layer.name: layer for layer in counter.layers()}
    # q reads the residual stream, sums of spikes (0, 1, 2): accumulations, one per unit
    assert stream[0].max() == 2
    q = layers["block.0.attn.q_linear"]
    assert q.kind == "AC" and torch.equal(q.input_sum, stream[0].double().sum(dim=(1, 2, 3)))
    assert layers["block.0.mlp.fc2_linear"].kind == "AC" and layers["patch_embed.proj_conv"].kind == "MAC"
    groups = 2 * 2 * 4  # T x B x heads
    assert counter.structure == {
        "and": groups * 16 * 16 * 8,  # q kᵀ: N x N sums of d spike products
        "mul": groups * 16 * 16,  # the scale on q kᵀ
        # sums in q kᵀ (d - 1 per element) and in (q kᵀ) v (N - 1 per element: v's spikes select),
        # the block's two residuals and the SPS's one
        "add": groups * (16 * 16 * 7 + 16 * 8 * 15) + 2 * (2 * 2 * 16 * 32) + 2 * 2 * 32 * 16,
        "compare": 8 * (2 * 2 * 16 * 8 * 8 + 2 * 2 * 32 * 4 * 4),  # 3x3 windows of maxpool2, maxpool3
        # batch norms folded into the layer before (each BN output element one add; the linear biases
        # absorbed), and the head's bias
        "bias": 4 * (4 * 256 + 8 * 256 + 16 * 256 + 32 * 64 + 32 * 16) + 4 * 16 * (4 * 32 + 128 + 32) + 2 * 10,
    }


def test_attention_operations_of_the_imagenet_layout_by_hand():
    # 1 block, D 32, 4 heads (d 8), T 2, B 2, 64 px: N = 16 tokens
    model = Spikformer(layout="imagenet", img_size=64, embed_dim=32, depth=1, num_heads=4, time_steps=2).eval()
    with torch.no_grad(), OperationCounter(model) as counter:
        model(images(64, batch=2))
    groups = 2 * 2 * 4
    assert counter.structure["and"] == groups * 8 * 8 * 16  # kᵀ v: d x d sums of N spike products
    assert counter.structure["mul"] == groups * 16 * 8  # the scale on q (kᵀ v)
    assert counter.structure["add"] == groups * (8 * 8 * 15 + 16 * 8 * 7) + 2 * (2 * 2 * 32 * 16) + 2 * 2 * 32 * 16
