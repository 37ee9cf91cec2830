"""The Spike-driven Transformer: sizes, shapes, spikes, gradients."""

import pytest
import timm
import torch

import spikedriven  # noqa: F401  (registers "sdt" with timm)
from spikedriven import ConfigError, SpikeRecorder, SpikingNeuron
from spikedriven.models import SpikeDrivenTransformer
from spikedriven.neurons import NEURONS

from helpers import tiny_model_kwargs


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_study_model_via_timm_has_the_published_size():
    model = timm.create_model(
        "sdt", num_classes=10, img_size=32, in_chans=3, embed_dim=256, depth=2, num_heads=8,
        mlp_ratio=4, time_steps=4, pooling_stat="0011", spike_mode="if_soft", v_threshold=1.0,
    )
    assert isinstance(model, SpikeDrivenTransformer)
    assert n_params(model) == 2_566_954
    assert n_params(timm.create_model("sdt", num_classes=100)) == 2_590_084
    assert model.neuron_spec.mode == "if_soft"
    assert all(m.v_threshold == 1.0 for n, m in model.named_modules() if isinstance(m, SpikingNeuron) and "kv_neuron" not in n)
    assert all(m.v_threshold == 0.5 for n, m in model.named_modules() if n.endswith("kv_neuron"))


def test_no_dead_weights():
    keys = timm.create_model("sdt").state_dict().keys()
    assert not [k for k in keys if "talking_heads" in k]


@pytest.mark.parametrize("mode", list(NEURONS))
def test_shapes_4d_5d_and_tet(mode):
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode=mode)).eval()
    x = torch.randn(3, 3, 16, 16)
    assert model(x).shape == (3, 10)
    x5 = x.unsqueeze(1).repeat(1, 2, 1, 1, 1)  # [B, T, C, H, W]
    torch.testing.assert_close(model(x5), model(x))
    tet = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode=mode, tet=True)).eval()
    tet.load_state_dict(model.state_dict())
    per_step = tet(x)
    assert per_step.shape == (2, 3, 10)
    torch.testing.assert_close(per_step.mean(0), model(x))


def test_wrong_input_is_a_clear_error_and_other_sizes_work():
    model = SpikeDrivenTransformer(**tiny_model_kwargs())
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 2, 16, 16))
    assert model(torch.randn(1, 3, 24, 24)).shape == (1, 10)  # convolutional: ImageNet evaluates at 288 as well as 224
    with pytest.raises(ValueError, match="B, C, H, W"):
        model(torch.randn(3, 16, 16))


@pytest.mark.parametrize("mode", list(NEURONS))
def test_every_neuron_layer_emits_only_spikes(mode):
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode=mode, depth=2))
    levels = model.spike_levels
    with SpikeRecorder(model, keep_spikes=True) as rec:
        model(torch.randn(4, 3, 16, 16) * 3)
    # SPS: 4 neurons; per block: shortcut, q, k, v, kv, fc1, fc2; head: 1
    assert len(rec.spikes) == 4 + 2 * 7 + 1
    for name, outs in rec.spikes.items():
        assert set(outs[0].unique().tolist()) <= {k / levels for k in range(levels + 1)}, name
        assert outs[0].shape[:2] == (2, 4), name
    # hooks are gone after the block: recording costs nothing when off
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("mode", list(NEURONS))
def test_gradients_reach_the_first_conv(mode):
    model = SpikeDrivenTransformer(**tiny_model_kwargs(spike_mode=mode))
    loss = model(torch.randn(4, 3, 16, 16)).logsumexp(-1).sum()
    loss.backward()
    grad = model.patch_embed.proj_conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_heads_group_channels_like_the_reference():
    """SDSA against a direct transcription of the reference's head reshape."""
    model = SpikeDrivenTransformer(**tiny_model_kwargs(depth=1)).eval()
    attn = model.block[0].attn
    x = torch.randn(2, 3, 32, 4, 4)
    T, B, C, H, W = x.shape
    N, h = H * W, attn.num_heads
    s = attn.shortcut_neuron(x).flatten(0, 1)

    def qkv(conv, bn, neuron):
        y = neuron(bn(conv(s)).reshape(T, B, C, H, W))
        return y.flatten(3).transpose(-1, -2).reshape(T, B, N, h, C // h).permute(0, 1, 3, 2, 4)

    q = qkv(attn.q_conv, attn.q_bn, attn.q_neuron)
    k = qkv(attn.k_conv, attn.k_bn, attn.k_neuron)
    v = qkv(attn.v_conv, attn.v_bn, attn.v_neuron)
    kv = attn.kv_neuron(k.mul(v).sum(dim=-2, keepdim=True))
    y = q.mul(kv).transpose(3, 4).reshape(T, B, C, N)
    ref = attn.proj_bn(attn.proj_conv(y.reshape(T * B, C, H, W))).reshape(T, B, C, H, W) + x
    torch.testing.assert_close(attn(x), ref)


@pytest.mark.parametrize(
    "bad, word",
    [
        (dict(embed_dim=30), "divisible by 8"),
        (dict(embed_dim=32, num_heads=3), "num_heads"),
        (dict(time_steps=0), "time_steps must be"),
        (dict(pooling_stat="012"), "pooling_stat"),
        (dict(spike_mode="relu"), "the registered neurons are if, if_soft"),
        (dict(depth=1.5), "depth"),
    ],
)
def test_impossible_sizes_are_refused(bad, word):
    with pytest.raises(ConfigError, match=word):
        SpikeDrivenTransformer(**tiny_model_kwargs(**bad))


def test_the_readmes_python_example_runs_as_written(tmp_path, monkeypatch):
    from docs_text import block_with

    code = block_with("python", "SpikeRecorder")  # docs/how-to/export.md, "From Python"
    model = timm.create_model("sdt", num_classes=10, spike_mode="if_soft", v_threshold=1.0)
    spikedriven.save_checkpoint(tmp_path / "best.pth.tar", {"state_dict": model.state_dict(), "model_args": model.model_args})
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["logits"].shape == (2, 10)
    assert len(scope["rates"]) == 4 + 2 * 7 + 1 and 0 <= scope["mean"] <= 1
