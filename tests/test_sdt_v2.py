"""SDT-V2 Meta-SpikeFormer (``metaspikformer_8_*``) against a reference written in this file from the SPEC's text
alone (SPEC-architectures 0.1, 0.3, 0.5 and 2): sizes, outputs, gradients, BN statistics and the original's
checkpoint layout."""

import functools
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import spikedriven  # noqa: F401  (registers the models with timm)
from spikedriven.errors import CheckpointError

from helpers import assert_metaformer_init, assert_same_state, mae_style_checkpoint

NAMES = ("metaspikformer_8_384", "metaspikformer_8_512", "metaspikformer_8_768")

# SPEC 2.6: embed dims, parameters without and with head_kd, state_dict entries without and with head_kd
SPEC_SIZES = {
    "metaspikformer_8_384": ([96, 192, 384, 480], 31_333_864, 31_814_864),
    "metaspikformer_8_512": ([128, 256, 512, 640], 55_350_248, 55_991_248),
    "metaspikformer_8_768": ([192, 384, 768, 960], 123_741_160, 124_702_160),
}
SPEC_ENTRIES = (825, 827)

# reduced width for the numerical comparisons: d = 8 in stage 3, 16 in stage 4; 64 px leave 4x4 tokens
SMALL = dict(embed_dims=[16, 32, 32, 64], num_heads=4, depths=[1, 1], img_size=64, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------- the reference, from the SPEC's text


class _Fire(torch.autograd.Function):
    """S = 1 where its argument (H - threshold) >= 0; backward: the sigmoid surrogate with alpha 4 (SPEC 0.1)."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (u,) = ctx.saved_tensors
        sig = torch.sigmoid(u * 4.0)
        return grad_out * (1.0 - sig) * sig * 4.0


class RefLIF(nn.Module):
    """Multi-step LIF over dim 0: tau 2, hard reset to 0, reset detached, V = 0 at each forward pass.
    Keeps the mean rate of its last output (for the check that spikes flow)."""

    def __init__(self, threshold=1.0):
        super().__init__()
        self.threshold = threshold
        self.rate = None

    def forward(self, x):
        v, out = 0.0, []
        for t in range(x.shape[0]):
            h = v + (x[t] - v) / 2.0  # charge: subtract, divide by tau, add
            s = _Fire.apply(h - self.threshold)
            s_bar = s.detach()
            v = (1.0 - s_bar) * h + s_bar * 0.0  # hard reset, detached
            out.append(s)
        y = torch.stack(out)
        self.rate = y.detach().mean().item()
        return y


def on_tb(fn, x):
    """Apply ``fn`` to [T*B, ...] (t the slower index) and reshape back to [T, B, ...]."""
    t, b = x.shape[:2]
    y = fn(x.flatten(0, 1))
    return y.reshape(t, b, *y.shape[1:])


class RefDownSampling(nn.Module):
    def __init__(self, cin, cout, k, s, p, first_layer):
        super().__init__()
        self.first_layer = first_layer
        if not first_layer:
            self.encode_lif = RefLIF()
        self.encode_conv = nn.Conv2d(cin, cout, k, s, p, bias=True)
        self.encode_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        if not self.first_layer:
            x = self.encode_lif(x)
        return on_tb(lambda z: self.encode_bn(self.encode_conv(z)), x)


class RefSepConv(nn.Module):
    """lif1 -> 1x1 c->2c -> bn1 -> lif2 -> depthwise 7x7 pad 3 -> 1x1 2c->c -> bn2 (no biases)."""

    def __init__(self, c):
        super().__init__()
        self.lif1 = RefLIF()
        self.pwconv1 = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * c)
        self.lif2 = RefLIF()
        self.dwconv = nn.Conv2d(2 * c, 2 * c, 7, padding=3, groups=2 * c, bias=False)
        self.pwconv2 = nn.Conv2d(2 * c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        x = on_tb(lambda z: self.bn1(self.pwconv1(z)), self.lif1(x))
        return on_tb(lambda z: self.bn2(self.pwconv2(self.dwconv(z))), self.lif2(x))


class RefConvBlock(nn.Module):
    def __init__(self, c, mlp_ratio=4):
        super().__init__()
        self.Conv = RefSepConv(c)
        self.lif1 = RefLIF()
        self.conv1 = nn.Conv2d(c, c * mlp_ratio, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c * mlp_ratio)
        self.lif2 = RefLIF()
        self.conv2 = nn.Conv2d(c * mlp_ratio, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        x = self.Conv(x) + x
        x_f = x
        y = on_tb(lambda z: self.bn1(self.conv1(z)), self.lif1(x))
        y = on_tb(lambda z: self.bn2(self.conv2(z)), self.lif2(y))
        return x_f + y


class RefBNAndPad(nn.Module):
    """BN, zero-pad by ``pad``, then overwrite the border per channel with the BN of zero computed from the
    running statistics (after the BN call, so a training step's update is in), weight and bias detached.
    ``border`` other than "spec" is a deliberate deviation for the negative controls: "zero" keeps the zero
    padding, "stale" computes the value before the BN call (from the statistics before the update)."""

    def __init__(self, pad, c, border="spec"):
        super().__init__()
        self.pad = pad
        self.bn = nn.BatchNorm2d(c)
        self.border = border

    def value(self):
        bn = self.bn
        return bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)

    def forward(self, x):
        stale = self.value()
        y = self.bn(x)
        value = stale if self.border == "stale" else self.value()
        p = self.pad
        y = F.pad(y, [p, p, p, p])
        if self.border != "zero":
            value = value.view(1, -1, 1, 1)
            y[:, :, :p, :] = value
            y[:, :, -p:, :] = value
            y[:, :, :, :p] = value
            y[:, :, :, -p:] = value
        return y


class RefRepConv(nn.Module):
    def __init__(self, cin, cout, border="spec"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 1, bias=False),
            RefBNAndPad(1, cin, border),
            nn.Sequential(
                nn.Conv2d(cin, cin, 3, 1, 0, groups=cin, bias=False),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ),
        )

    def forward(self, x):
        return self.body(x)


class RefAttention(nn.Module):
    def __init__(self, c, heads, threshold=0.5, scale=0.125, border="spec"):
        super().__init__()
        self.heads, self.scale = heads, scale
        self.head_lif = RefLIF()
        self.q_conv = nn.Sequential(RefRepConv(c, c, border), nn.BatchNorm2d(c))
        self.q_lif = RefLIF()
        self.k_conv = nn.Sequential(RefRepConv(c, c, border), nn.BatchNorm2d(c))
        self.k_lif = RefLIF()
        self.v_conv = nn.Sequential(RefRepConv(c, c, border), nn.BatchNorm2d(c))
        self.v_lif = RefLIF()
        self.attn_lif = RefLIF(threshold)
        self.proj_conv = nn.Sequential(RefRepConv(c, c, border), nn.BatchNorm2d(c))

    def forward(self, x):
        t, b, c, height, width = x.shape
        n, h = height * width, self.heads
        s = self.head_lif(x)

        def qkv(conv, lif):
            y = lif(on_tb(conv, s)).flatten(3)  # [T, B, C, N]
            # [T, B, h, N, d] as a contiguous copy (the forward is exact either way; on the permuted view the
            # backward of the products sums in another order, an ulp apart)
            return y.transpose(-1, -2).reshape(t, b, n, h, c // h).permute(0, 1, 3, 2, 4).contiguous()

        q, k, v = qkv(self.q_conv, self.q_lif), qkv(self.k_conv, self.k_lif), qkv(self.v_conv, self.v_lif)
        m = k.transpose(-2, -1) @ v
        y = (q @ m) * self.scale
        y = y.transpose(3, 4).reshape(t, b, c, n)  # channel head * d + j
        y = self.attn_lif(y).reshape(t, b, c, height, width)
        return on_tb(self.proj_conv, y)


class RefMLP(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.fc1_lif = RefLIF()
        self.fc1_conv = nn.Conv1d(c, hidden, 1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc2_lif = RefLIF()
        self.fc2_conv = nn.Conv1d(hidden, c, 1)
        self.fc2_bn = nn.BatchNorm1d(c)

    def forward(self, x):
        t, b, c, height, width = x.shape
        y = on_tb(lambda z: self.fc1_bn(self.fc1_conv(z)), self.fc1_lif(x.flatten(3)))
        y = on_tb(lambda z: self.fc2_bn(self.fc2_conv(z)), self.fc2_lif(y))
        return y.reshape(t, b, c, height, width)


class RefBlock(nn.Module):
    def __init__(self, c, heads, mlp_ratio, **attn):
        super().__init__()
        self.attn = RefAttention(c, heads, **attn)
        self.mlp = RefMLP(c, c * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class RefMetaSpikeFormer(nn.Module):
    def __init__(self, embed_dims, num_heads=8, mlp_ratio=4, depths=(6, 2), num_classes=1000, in_chans=3, kd=False,
                 **attn):
        super().__init__()
        e = embed_dims
        self.T = 1
        self.kd = kd
        self.downsample1_1 = RefDownSampling(in_chans, e[0] // 2, 7, 2, 3, True)
        self.ConvBlock1_1 = nn.ModuleList([RefConvBlock(e[0] // 2, mlp_ratio)])
        self.downsample1_2 = RefDownSampling(e[0] // 2, e[0], 3, 2, 1, False)
        self.ConvBlock1_2 = nn.ModuleList([RefConvBlock(e[0], mlp_ratio)])
        self.downsample2 = RefDownSampling(e[0], e[1], 3, 2, 1, False)
        self.ConvBlock2_1 = nn.ModuleList([RefConvBlock(e[1], mlp_ratio)])
        self.ConvBlock2_2 = nn.ModuleList([RefConvBlock(e[1], mlp_ratio)])
        self.downsample3 = RefDownSampling(e[1], e[2], 3, 2, 1, False)
        self.block3 = nn.ModuleList([RefBlock(e[2], num_heads, mlp_ratio, **attn) for _ in range(depths[0])])
        self.downsample4 = RefDownSampling(e[2], e[3], 3, 1, 1, False)
        self.block4 = nn.ModuleList([RefBlock(e[3], num_heads, mlp_ratio, **attn) for _ in range(depths[1])])
        self.lif = RefLIF()
        self.head = nn.Linear(e[3], num_classes)
        if kd:
            self.head_kd = nn.Linear(e[3], num_classes)

    def forward(self, image):
        x = image.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.downsample1_1(x)
        for stage in (self.ConvBlock1_1, [self.downsample1_2], self.ConvBlock1_2, [self.downsample2],
                      self.ConvBlock2_1, self.ConvBlock2_2, [self.downsample3], self.block3, [self.downsample4],
                      self.block4):
            for layer in stage:
                x = layer(x)
        x = self.lif(x.flatten(3).mean(3))  # [T, B, C4]
        out = self.head(x).mean(0)
        if not self.kd:
            return out
        out_kd = self.head_kd(x).mean(0)
        return (out, out_kd) if self.training else (out + out_kd) / 2


# --------------------------------------------------------------------- helpers


@functools.cache
def _firing_weights(kd):
    """Random weights for the reduced reference under which spikes flow in every layer: random BN weights and
    biases (larger biases on q/k/v so the attention neuron fires), running statistics calibrated on random
    images and then perturbed, and a head larger than its 0.02 init so the logits differ visibly."""
    torch.manual_seed(0)
    ref = RefMetaSpikeFormer(SMALL["embed_dims"], SMALL["num_heads"], 4, SMALL["depths"], SMALL["num_classes"], kd=kd)
    gen = torch.Generator().manual_seed(1)
    bns = {name: m for name, m in ref.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for name, m in bns.items():
        c = m.num_features
        m.weight.data = torch.rand(c, generator=gen) + 0.5
        m.bias.data = torch.rand(c, generator=gen) * 1.5 - 0.25
        if re.search(r"attn\.[qkv]_conv\.1$", name):
            m.bias.data += 1.2
        m.momentum = None  # calibrate: the running statistics become the batch's
    for m in ref.modules():
        if isinstance(m, nn.Linear):
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.1
    with torch.no_grad():
        ref.train()(torch.randn(4, 3, SMALL["img_size"], SMALL["img_size"], generator=gen))
    for m in bns.values():
        c = m.num_features
        m.running_mean.data += torch.randn(c, generator=gen) * 0.2 * m.running_var.sqrt()
        m.running_var.data *= torch.rand(c, generator=gen) * 0.5 + 0.75
        m.num_batches_tracked.fill_(7)
    return {k: v.clone() for k, v in ref.state_dict().items()}


def reference(kd=False, time_steps=1, **deviation):
    """The reference at the reduced width with the firing weights, in training mode."""
    ref = RefMetaSpikeFormer(SMALL["embed_dims"], SMALL["num_heads"], 4, SMALL["depths"], SMALL["num_classes"], kd=kd,
                             **deviation)
    ref.load_state_dict(_firing_weights(kd), strict=True)
    ref.T = time_steps
    return ref


def project_model(kd=False, time_steps=1, **kwargs):
    return timm.create_model("metaspikformer_8_512", **{**SMALL, **kwargs}, time_steps=time_steps, kd=kd)


def images(batch=3, seed=5):
    return torch.randn(batch, 3, SMALL["img_size"], SMALL["img_size"], generator=torch.Generator().manual_seed(seed))


def rates(ref):
    return [m.rate for m in ref.modules() if isinstance(m, RefLIF)]


def loss_of(out, labels):
    if isinstance(out, tuple):  # kd in training: weigh the heads differently so each gets its own gradient
        return F.cross_entropy(out[0], labels) + 0.3 * F.cross_entropy(out[1], labels)
    return F.cross_entropy(out, labels)


def max_diff(a, b):
    if isinstance(a, tuple):
        return max(max_diff(x, y) for x, y in zip(a, b))
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- sizes (SPEC 2.6, 2.7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kd", [False, True])
def test_parameter_and_entry_counts_equal_the_spec(name, kd):
    dims, params, params_kd = SPEC_SIZES[name]
    with torch.device("meta"):
        model = timm.create_model(name, kd=kd) if kd else timm.create_model(name)
        ref = RefMetaSpikeFormer(dims, kd=kd)
    assert sum(p.numel() for p in model.parameters()) == (params_kd if kd else params)
    assert len(model.state_dict()) == SPEC_ENTRIES[kd]
    # the reference agrees with the SPEC's table, and the model has its keys, shapes and order
    assert sum(p.numel() for p in ref.parameters()) == (params_kd if kd else params)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert shapes == ref_shapes
    assert list(shapes) == list(ref_shapes)


def test_per_part_counts_of_8_512():
    with torch.device("meta"):
        model = timm.create_model("metaspikformer_8_512")
    count = lambda m: sum(p.numel() for p in m.parameters())
    parts = {"downsample1_1": 9_600, "ConvBlock1_1": 318_592, "downsample1_2": 74_112, "ConvBlock1_2": 1_259_776,
             "downsample2": 295_680, "ConvBlock2_1": 5_009_920, "ConvBlock2_2": 5_009_920, "downsample3": 1_181_184,
             "block3": 25_396_224, "downsample4": 2_951_040, "block4": 13_203_200, "head": 641_000}
    assert {k: count(getattr(model, k)) for k in parts} == parts
    assert count(model.block3[0].attn) == 2_127_872 and count(model.block3[0].mlp) == 2_104_832
    assert count(model.block4[0].attn) == 3_315_200 and count(model.block4[0].mlp) == 3_286_400


def test_initialisation_follows_the_spec():
    """SPEC 2.5: the head and head_kd trunc_normal std 0.02 with bias 0; every conv (2-D and 1-D) PyTorch's default
    kaiming-uniform U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight and bias; BNs weight 1, bias 0, statistics 0 and 1."""
    torch.manual_seed(3)
    model = timm.create_model("metaspikformer_8_512", **{**SMALL, "num_classes": 100}, kd=True)
    assert_metaformer_init(model, (model.head, model.head_kd), convs=53)


# ------------------------------------------------------------------ equal to the reference


@pytest.mark.parametrize("time_steps", [1, 2])
@pytest.mark.parametrize("kd", [False, True])
def test_equals_the_reference_in_eval_and_training(time_steps, kd):
    ref = reference(kd=kd, time_steps=time_steps)
    model = project_model(kd=kd, time_steps=time_steps)
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(model.state_dict(), strict=True)  # and back
    x, labels = images(), torch.tensor([1, 7, 3])

    # eval: running statistics
    ref.eval(), model.eval()
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert not isinstance(got, tuple) and got.shape == (3, 10)
    assert max_diff(expected, got) <= 1e-6, max_diff(expected, got)
    r = rates(ref)
    assert len(r) == 35 and all(0.01 < v < 0.95 for v in r), r  # spikes flow in every layer: some but not all fire
    assert expected.std() > 0.1  # the logits depend on the image

    # training: batch statistics, gradients of every parameter, running statistics after the step
    ref.train(), model.train()
    expected, got = ref(x), model(x)
    assert isinstance(got, tuple) == kd
    assert max_diff(expected, got) <= 1e-6, max_diff(expected, got)
    assert all(0.01 < v < 0.95 for v in rates(ref)), rates(ref)
    loss_of(expected, labels).backward()
    loss_of(got, labels).backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        g, g_ref = p.grad, ref_grads[name].grad
        assert g is not None and g_ref is not None, name
        assert torch.allclose(g, g_ref, rtol=1e-5, atol=1e-6), (name, (g - g_ref).abs().max().item())
    assert sum(p.grad.abs().sum().item() > 0 for p in model.parameters()) == len(list(model.parameters()))
    assert_same_state(ref, model)  # running statistics and num_batches_tracked, bit for bit


def test_a_second_forward_pass_starts_from_rest():
    """No membrane state is kept between calls (the original's loop resets the net after every batch)."""
    ref = reference(time_steps=2)
    model = project_model(time_steps=2)
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), model.eval()
    x = images()
    with torch.no_grad():
        first, second, expected = model(x), model(x), ref(x)
    assert torch.equal(first, second)
    assert max_diff(first, expected) <= 1e-6


def test_negative_controls_the_comparison_is_sensitive():
    """Deviations from the SPEC that the reference can make each change the logits, so the agreement above is
    not a coincidence of silent layers: in eval the pad value (zeros), the fixed scale (d^-1/2) and the attention
    threshold (1.0); in training the pad value from the statistics before the BN's update."""
    x = images()
    base = reference(time_steps=2)
    with torch.no_grad():
        expected = base.eval()(x)
        for deviation in (dict(border="zero"), dict(scale=(SMALL["embed_dims"][2] // 4) ** -0.5),
                          dict(threshold=1.0)):
            other = reference(time_steps=2, **deviation).eval()
            assert max_diff(other(x), expected) > 1e-3, deviation
        expected = reference(time_steps=2).train()(x)
        stale = reference(time_steps=2, border="stale").train()(x)
        assert max_diff(stale, expected) > 1e-3


def test_defaults_are_one_time_step_and_no_kd():
    """Built without time_steps and kd (SPEC 2.1: model.T = 1, kd off), the model is the reference at T = 1."""
    ref = reference(time_steps=1).eval()
    model = timm.create_model("metaspikformer_8_512", **SMALL)
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval()
    x = images()
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert max_diff(expected, got) <= 1e-6
    model.train()
    assert not isinstance(model(x), tuple)


# ------------------------------------------------------------------ checkpoints (SPEC 2.7)


def original_checkpoint(ref, path, kd, time_steps, model="metaspikformer_8_512"):
    """``misc.save_model``'s layout (``mae_style_checkpoint``) with this model's arguments."""
    return mae_style_checkpoint(ref.state_dict(), path, model=model, time_steps=time_steps, kd=kd, nb_classes=10,
                                input_size=SMALL["img_size"])


@pytest.mark.parametrize("kd", [False, True])
def test_the_original_checkpoint_loads_strictly(tmp_path, kd):
    from spikedriven.engine.checkpoint import load_checkpoint

    ref = reference(kd=kd, time_steps=2).eval()
    path = original_checkpoint(ref, tmp_path / "checkpoint-3.pth", kd, 2)
    model = project_model(kd=kd, time_steps=2)
    ckpt = load_checkpoint(model, path)
    assert ckpt["epoch"] == 3
    assert_same_state(ref, model)
    model.eval()
    x = images()
    with torch.no_grad():
        assert max_diff(model(x), ref(x)) <= 1e-6


def test_a_kd_checkpoint_does_not_fit_a_model_without_head_kd(tmp_path):
    from spikedriven.engine.checkpoint import load_checkpoint

    path = original_checkpoint(reference(kd=True, time_steps=2), tmp_path / "checkpoint-3.pth", True, 2)
    with pytest.raises(CheckpointError, match="head_kd"):
        load_checkpoint(project_model(kd=False, time_steps=2), path)


def test_a_v2_checkpoint_is_refused_by_a_v3_model(tmp_path):
    from spikedriven.engine.checkpoint import load_checkpoint

    path = original_checkpoint(reference(time_steps=1), tmp_path / "checkpoint-3.pth", False, 1)
    v3 = timm.create_model("efficient_spiking_transformer_s", embed_dims=SMALL["embed_dims"], num_heads=4,
                           depths=[1, 1], img_size=SMALL["img_size"], num_classes=10)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(v3, path)
    assert "sdt_v2" in str(error.value) and "sdt_v3" in str(error.value), str(error.value)
    # the same without the recorded model name: the weights alone tell the family
    bare = tmp_path / "bare.pth"
    torch.save(reference(time_steps=1).state_dict(), bare)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(v3, bare)
    assert "sdt_v2" in str(error.value) and "sdt_v3" in str(error.value), str(error.value)
