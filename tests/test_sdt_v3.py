"""SDT-V3 E-SpikeFormer (``efficient_spiking_transformer_*``) against a reference written in this file from the
SPEC's text alone (SPEC-architectures 0.2, 0.3, 0.5 and 3): sizes, outputs, gradients, BN statistics, the
quantiser's ties and the original's checkpoint layout."""

import functools

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import spikedriven  # noqa: F401  (registers the models with timm)
from spikedriven.errors import CheckpointError

from helpers import assert_metaformer_init, assert_same_state, mae_style_checkpoint

NAMES = ("efficient_spiking_transformer_t", "efficient_spiking_transformer_s", "efficient_spiking_transformer_m",
         "efficient_spiking_transformer_l")

# SPEC 3.6: embed dims and parameters; every size has 605 state_dict entries
SPEC_SIZES = {
    "efficient_spiking_transformer_t": ([24, 48, 96, 128], 2_702_048),
    "efficient_spiking_transformer_s": ([32, 64, 128, 192], 5_105_608),
    "efficient_spiking_transformer_m": ([48, 96, 192, 240], 10_023_112),
    "efficient_spiking_transformer_l": ([64, 128, 256, 360], 18_987_504),
}
SPEC_ENTRIES = 605

# reduced width for the numerical comparisons: d = 16 in stages 3 and 4, so 2 * scale = 0.5 and the attention
# quantiser sees multiples of 1/128, where exact x.5 ties are common (SPEC 0.2); 64 px leave 4x4 tokens
SMALL = dict(embed_dims=[16, 32, 64, 64], num_heads=4, depths=[1, 1], img_size=64, num_classes=10)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------- the reference, from the SPEC's text


class _Quantise(torch.autograd.Function):
    """round(clamp(x, 0, 4)), rounding half to even; the gradient passes where 0 <= x <= 4 (SPEC 0.2).
    ``half_up`` and ``open_window`` are deliberate deviations for the negative controls (the Model_Large
    quantiser: floor(clamp + 0.5), gradient only where 0 < x < 4)."""

    @staticmethod
    def forward(ctx, x, half_up=False, open_window=False):
        ctx.save_for_backward(x)
        ctx.open_window = open_window
        clamped = torch.clamp(x, 0.0, 4.0)
        return torch.floor(clamped + 0.5) if half_up else torch.round(clamped)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        inside = ((x > 0) & (x < 4)) if ctx.open_window else ((x >= 0) & (x <= 4))
        return grad_out * inside.to(grad_out.dtype), None, None


class RefMultiSpike(nn.Module):
    """y = quantise(x) / Norm (Norm 4 by default). Keeps, of its last input, the fraction of non-zero outputs
    and the number of exact x.5 ties inside [0, 4]."""

    def __init__(self, norm=4.0, half_up=False, open_window=False):
        super().__init__()
        self.norm = norm
        self.half_up, self.open_window = half_up, open_window
        self.rate = self.ties = None

    def forward(self, x):
        q = _Quantise.apply(x, self.half_up, self.open_window)
        with torch.no_grad():
            self.rate = (q != 0).float().mean().item()
            twice = x * 2
            self.ties = int(((twice == torch.round(twice)) & (torch.remainder(twice, 2) == 1) & (x >= 0) & (x <= 4))
                            .sum().item())
        return q / self.norm


class RefDownSampling(nn.Module):
    def __init__(self, cin, cout, k, s, p, first_layer, **spike):
        super().__init__()
        self.first_layer = first_layer
        if not first_layer:
            self.encode_spike = RefMultiSpike(**spike)
        self.encode_conv = nn.Conv2d(cin, cout, k, s, p, bias=True)
        self.encode_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        if not self.first_layer:
            x = self.encode_spike(x)
        return self.encode_bn(self.encode_conv(x))


class RefSepConvSpike(nn.Module):
    def __init__(self, c, kernel, padding, **spike):
        super().__init__()
        self.spike1 = RefMultiSpike(**spike)
        self.pwconv1 = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c))
        self.spike2 = RefMultiSpike(**spike)
        self.dwconv = nn.Sequential(nn.Conv2d(2 * c, 2 * c, kernel, padding=padding, groups=2 * c, bias=False),
                                    nn.BatchNorm2d(2 * c))
        self.spike3 = RefMultiSpike(**spike)
        self.pwconv2 = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        x = self.pwconv1(self.spike1(x))
        x = self.dwconv(self.spike2(x))
        return self.pwconv2(self.spike3(x))


class RefConvBlock(nn.Module):
    def __init__(self, c, mlp_ratio=4, **spike):
        super().__init__()
        self.Conv = RefSepConvSpike(c, 7, 3, **spike)
        self.spike1 = RefMultiSpike(**spike)
        self.conv1 = nn.Conv2d(c, c * mlp_ratio, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c * mlp_ratio)
        self.spike2 = RefMultiSpike(**spike)
        self.conv2 = nn.Conv2d(c * mlp_ratio, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        x = self.Conv(x) + x
        x_f = x
        y = self.bn1(self.conv1(self.spike1(x)))
        y = self.bn2(self.conv2(self.spike2(y)))
        return x_f + y


class RefAttention(nn.Module):
    def __init__(self, c, heads, value_ratio=4, **spike):
        super().__init__()
        self.heads = heads
        self.scale = (c // heads) ** -0.5  # a Python double
        self.head_spike = RefMultiSpike(**spike)
        self.q_conv = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.q_spike = RefMultiSpike(**spike)
        self.k_conv = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.k_spike = RefMultiSpike(**spike)
        self.v_conv = nn.Sequential(nn.Conv2d(c, c * value_ratio, 1, bias=False), nn.BatchNorm2d(c * value_ratio))
        self.v_spike = RefMultiSpike(**spike)
        self.attn_spike = RefMultiSpike(**spike)
        self.proj_conv = nn.Sequential(nn.Conv2d(c * value_ratio, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        b, _, height, width = x.shape
        n, h = height * width, self.heads
        s = self.head_spike(x)

        def split(y):  # [B, C', H, W] -> [B, h, N, C'/h], channel head * C'/h + j
            return y.flatten(2).transpose(-1, -2).reshape(b, n, h, y.shape[1] // h).permute(0, 2, 1, 3)

        q = split(self.q_spike(self.q_conv(s)))
        k = split(self.k_spike(self.k_conv(s)))
        v = split(self.v_spike(self.v_conv(s)))
        a = q @ k.transpose(-2, -1)  # [B, h, N, N]
        y = (a @ v) * (self.scale * 2)  # one multiplication by the double constant 2 * scale
        y = y.transpose(2, 3).reshape(b, -1, n)  # [B, 4C, N]
        y = self.attn_spike(y).reshape(b, -1, height, width)
        return self.proj_conv(y)


class RefMLP(nn.Module):
    def __init__(self, c, hidden, **spike):
        super().__init__()
        self.fc1_spike = RefMultiSpike(**spike)
        self.fc1_conv = nn.Conv1d(c, hidden, 1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc2_spike = RefMultiSpike(**spike)
        self.fc2_conv = nn.Conv1d(hidden, c, 1)
        self.fc2_bn = nn.BatchNorm1d(c)

    def forward(self, x):
        b, c, height, width = x.shape
        y = self.fc1_bn(self.fc1_conv(self.fc1_spike(x.flatten(2))))
        y = self.fc2_bn(self.fc2_conv(self.fc2_spike(y)))
        return y.reshape(b, c, height, width)


class RefBlock(nn.Module):
    def __init__(self, c, heads, mlp_ratio=4, value_ratio=4, **spike):
        super().__init__()
        self.conv = RefSepConvSpike(c, 3, 1, **spike)
        self.attn = RefAttention(c, heads, value_ratio, **spike)
        self.mlp = RefMLP(c, c * mlp_ratio, **spike)

    def forward(self, x):
        x = x + self.conv(x)
        x = x + self.attn(x)
        return x + self.mlp(x)


class RefESpikeFormer(nn.Module):
    def __init__(self, embed_dims, num_heads=8, mlp_ratio=4, depths=(6, 2), num_classes=1000, in_chans=3,
                 value_ratio=4, half_up=False, open_window=False):
        super().__init__()
        e, sp = embed_dims, dict(half_up=half_up, open_window=open_window)
        self.downsample1_1 = RefDownSampling(in_chans, e[0] // 2, 7, 2, 3, True, **sp)
        self.ConvBlock1_1 = nn.ModuleList([RefConvBlock(e[0] // 2, mlp_ratio, **sp)])
        self.downsample1_2 = RefDownSampling(e[0] // 2, e[0], 3, 2, 1, False, **sp)
        self.ConvBlock1_2 = nn.ModuleList([RefConvBlock(e[0], mlp_ratio, **sp)])
        self.downsample2 = RefDownSampling(e[0], e[1], 3, 2, 1, False, **sp)
        self.ConvBlock2_1 = nn.ModuleList([RefConvBlock(e[1], mlp_ratio, **sp)])
        self.ConvBlock2_2 = nn.ModuleList([RefConvBlock(e[1], mlp_ratio, **sp)])
        self.downsample3 = RefDownSampling(e[1], e[2], 3, 2, 1, False, **sp)
        self.block3 = nn.ModuleList([RefBlock(e[2], num_heads, mlp_ratio, value_ratio, **sp) for _ in range(depths[0])])
        self.downsample4 = RefDownSampling(e[2], e[3], 3, 1, 1, False, **sp)
        self.block4 = nn.ModuleList([RefBlock(e[3], num_heads, mlp_ratio, value_ratio, **sp) for _ in range(depths[1])])
        self.spike = RefMultiSpike(norm=1.0, **sp)
        self.head = nn.Linear(e[3], num_classes)

    def forward(self, x):
        x = self.downsample1_1(x)
        for stage in (self.ConvBlock1_1, [self.downsample1_2], self.ConvBlock1_2, [self.downsample2],
                      self.ConvBlock2_1, self.ConvBlock2_2, [self.downsample3], self.block3, [self.downsample4],
                      self.block4):
            for layer in stage:
                x = layer(x)
        x = self.spike(x.flatten(2).mean(2))  # integer counts 0..4
        return self.head(x)


# --------------------------------------------------------------------- helpers


@functools.cache
def _firing_weights():
    """Random weights for the reduced reference under which every quantiser has some zero and some non-zero
    outputs: random BN weights and biases, running statistics calibrated on random images and then perturbed,
    a head larger than its 0.02 init."""
    torch.manual_seed(0)
    ref = RefESpikeFormer(SMALL["embed_dims"], SMALL["num_heads"], 4, SMALL["depths"], SMALL["num_classes"])
    gen = torch.Generator().manual_seed(1)
    bns = [m for m in ref.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        c = m.num_features
        m.weight.data = torch.rand(c, generator=gen) + 0.5
        m.bias.data = torch.rand(c, generator=gen) * 1.5 - 0.25
        m.momentum = None  # calibrate: the running statistics become the batch's
    ref.head.weight.data = torch.randn(ref.head.weight.shape, generator=gen) * 0.3
    ref.head.bias.data = torch.randn(ref.head.bias.shape, generator=gen) * 0.1
    with torch.no_grad():
        ref.train()(torch.randn(4, 3, SMALL["img_size"], SMALL["img_size"], generator=gen))
    for m in bns:
        c = m.num_features
        m.running_mean.data += torch.randn(c, generator=gen) * 0.2 * m.running_var.sqrt()
        m.running_var.data *= torch.rand(c, generator=gen) * 0.5 + 0.75
        m.num_batches_tracked.fill_(7)
    return {k: v.clone() for k, v in ref.state_dict().items()}


def reference(**deviation):
    ref = RefESpikeFormer(SMALL["embed_dims"], SMALL["num_heads"], 4, SMALL["depths"], SMALL["num_classes"],
                          **deviation)
    ref.load_state_dict(_firing_weights(), strict=True)
    return ref


def project_model(time_steps=1, **kwargs):
    return timm.create_model("efficient_spiking_transformer_s", **{**SMALL, **kwargs}, time_steps=time_steps)


def images(batch=3, seed=5):
    return torch.randn(batch, 3, SMALL["img_size"], SMALL["img_size"], generator=torch.Generator().manual_seed(seed))


def spikes(ref):
    return {name: m for name, m in ref.named_modules() if isinstance(m, RefMultiSpike)}


# ---------------------------------------------------------------- sizes (SPEC 3.6, 3.7)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_and_entry_counts_equal_the_spec(name):
    dims, params = SPEC_SIZES[name]
    with torch.device("meta"):
        model = timm.create_model(name)
        ref = RefESpikeFormer(dims)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == SPEC_ENTRIES
    # the reference agrees with the SPEC's table, and the model has its keys, shapes and order
    assert sum(p.numel() for p in ref.parameters()) == params
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert shapes == ref_shapes
    assert list(shapes) == list(ref_shapes)


def test_per_part_counts_of_s():
    with torch.device("meta"):
        model = timm.create_model("efficient_spiking_transformer_s")
    count = lambda m: sum(p.numel() for p in m.parameters())
    parts = {"downsample1_1": 2_400, "ConvBlock1_1": 21_344, "downsample1_2": 4_704, "ConvBlock1_2": 81_600,
             "downsample2": 18_624, "ConvBlock2_1": 318_848, "ConvBlock2_2": 318_848, "downsample3": 74_112,
             "block3": 2_206_464, "downsample4": 221_760, "block4": 1_643_904, "head": 193_000}
    assert {k: count(getattr(model, k)) for k in parts} == parts
    block = model.block3[0]
    assert (count(block.conv), count(block.attn), count(block.mlp)) == (69_120, 165_632, 132_992)


def test_initialisation_follows_the_spec():
    """SPEC 3.5: the head trunc_normal std 0.02 with bias 0; every conv (2-D and 1-D) PyTorch's default
    kaiming-uniform U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight and bias; BNs weight 1, bias 0, statistics 0 and 1."""
    torch.manual_seed(3)
    model = timm.create_model("efficient_spiking_transformer_s", **{**SMALL, "num_classes": 100})
    assert_metaformer_init(model, (model.head,), convs=43)


# ------------------------------------------------------------------ equal to the reference


def test_equals_the_reference_in_eval_and_training():
    ref = reference()
    model = project_model()
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(model.state_dict(), strict=True)  # and back
    x, labels = images(), torch.tensor([1, 7, 3])

    # eval: running statistics
    ref.eval(), model.eval()
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert got.shape == (3, 10)
    assert (expected - got).abs().max().item() <= 1e-6, (expected - got).abs().max().item()
    layers = spikes(ref)
    assert len(layers) == 45
    assert all(0.01 < m.rate < 0.99 for m in layers.values()), {k: m.rate for k, m in layers.items()}
    # exact x.5 ties reach the quantiser in the attention (SPEC 0.2), so round-half-even is exercised
    assert layers["block3.0.attn.attn_spike"].ties > 0 and layers["block4.0.attn.attn_spike"].ties > 0
    assert expected.std() > 0.1

    # training: batch statistics, gradients of every parameter, running statistics after the step
    ref.train(), model.train()
    expected, got = ref(x), model(x)
    assert (expected - got).abs().max().item() <= 1e-6, (expected - got).abs().max().item()
    assert sum(m.ties for m in layers.values()) > 0
    F.cross_entropy(expected, labels).backward()
    F.cross_entropy(got, labels).backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        g, g_ref = p.grad, ref_grads[name].grad
        assert g is not None and g_ref is not None, name
        assert torch.allclose(g, g_ref, rtol=1e-5, atol=1e-6), (name, (g - g_ref).abs().max().item())
    assert all(p.grad.abs().sum().item() > 0 for p in model.parameters())
    assert_same_state(ref, model)  # running statistics and num_batches_tracked, bit for bit


def test_ties_round_half_to_even():
    """Every input of the first quantiser an exact tie: ``downsample1_1``'s BN with weight 0 outputs its bias,
    here 0.5, 1.5, 2.5, 3.5 by channel. Round-half-even counts 0, 2, 2, 4 spikes; rounding half up would count
    1, 2, 3, 4 and give other logits."""
    ref = reference()
    bn = ref.downsample1_1.encode_bn
    bn.weight.data.zero_()
    bn.bias.data = torch.tensor([0.5, 1.5, 2.5, 3.5]).repeat(bn.num_features)[: bn.num_features]
    model = project_model()
    model.load_state_dict(ref.state_dict(), strict=True)
    half_up = reference(half_up=True)
    half_up.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), model.eval(), half_up.eval()
    x = images()
    with torch.no_grad():
        expected, got, other = ref(x), model(x), half_up(x)
    first = ref.ConvBlock1_1[0].Conv.spike1
    assert first.ties == x.shape[0] * bn.num_features * (SMALL["img_size"] // 2) ** 2
    assert (expected - got).abs().max().item() <= 1e-6, (expected - got).abs().max().item()
    assert (expected - other).abs().max().item() > 1e-3


def test_negative_controls_the_comparison_is_sensitive():
    """The Model_Large quantiser's rounding (floor(x + 0.5)) in the reference gives other logits on the same
    weights, and its open gradient window (0 < x < 4) other gradients: the ties and the window's ends occur, so
    the agreement above checks both."""
    x, labels = images(), torch.tensor([1, 7, 3])
    base, half_up = reference().eval(), reference(half_up=True).eval()
    with torch.no_grad():
        diff = (base(x) - half_up(x)).abs().max().item()
    assert diff > 1e-3, diff
    grads = []
    for open_window in (False, True):
        ref = reference(open_window=open_window).train()
        F.cross_entropy(ref(x), labels).backward()
        grads.append({n: p.grad for n, p in ref.named_parameters()})
    assert max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0]) > 1e-3


def test_time_steps_2_runs():
    """The original has no time axis; a model built with T = 2 still maps images to logits."""
    model = project_model(time_steps=2)
    model.load_state_dict(reference().state_dict(), strict=True)
    model.eval()
    with torch.no_grad():
        out = model(images())
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_defaults_equal_the_reference():
    """Built with only the widths (time_steps, value_ratio and the neuron at their defaults)."""
    ref = reference().eval()
    model = timm.create_model("efficient_spiking_transformer_s", **SMALL)
    model.load_state_dict(ref.state_dict(), strict=True)
    model.eval()
    x = images()
    with torch.no_grad():
        diff = (ref(x) - model(x)).abs().max().item()
    assert diff <= 1e-6, diff


# ------------------------------------------------------------------ checkpoints (SPEC 3.7)


def original_checkpoint(ref, path, model="Efficient_Spiking_Transformer_s"):
    """``misc.save_model``'s layout (``mae_style_checkpoint``) with this model's arguments."""
    return mae_style_checkpoint(ref.state_dict(), path, model=model, time_steps=1, nb_classes=10,
                                input_size=SMALL["img_size"])


def test_the_original_checkpoint_loads_strictly(tmp_path):
    from spikedriven.engine.checkpoint import load_checkpoint

    ref = reference().eval()
    path = original_checkpoint(ref, tmp_path / "checkpoint-3.pth")
    model = project_model()
    ckpt = load_checkpoint(model, path)
    assert ckpt["epoch"] == 3
    assert_same_state(ref, model)
    model.eval()
    x = images()
    with torch.no_grad():
        diff = (model(x) - ref(x)).abs().max().item()
    assert diff <= 1e-6, diff


def test_a_v3_checkpoint_is_refused_by_a_v2_model(tmp_path):
    from spikedriven.engine.checkpoint import load_checkpoint

    path = original_checkpoint(reference(), tmp_path / "checkpoint-3.pth")
    v2 = timm.create_model("metaspikformer_8_512", embed_dims=SMALL["embed_dims"], num_heads=4, depths=[1, 1],
                           img_size=SMALL["img_size"], num_classes=10)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(v2, path)
    assert "sdt_v2" in str(error.value) and "sdt_v3" in str(error.value), str(error.value)
    # the same without the recorded model name: the weights alone tell the family
    bare = tmp_path / "bare.pth"
    torch.save(reference().state_dict(), bare)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(v2, bare)
    assert "sdt_v2" in str(error.value) and "sdt_v3" in str(error.value), str(error.value)
