"""SDT-V3, E-SpikeFormer (Yao et al., TPAMI 2025): the base models, with a pluggable spiking neuron.

Meta-SpikeFormer's skeleton (``sdt_v2.py``: four stages, the same down-sampling, convolutional blocks
and MLP) with every neuron replaced by multi-level integer spikes and new blocks:

* separable convolutions with a batch norm and a neuron after each of their three convolutions
  (``SepConvSpike``), 7x7 in the convolutional stages and 3x3 in the transformer blocks;
* transformer blocks of three residual branches: that separable convolution, an attention, an MLP;
* the attention: spikes q, k (``C`` wide) and v (``value_ratio C`` wide) from 1x1 convolutions and batch
  norms, ``((q kᵀ) v) 2 / sqrt(C // heads)`` per head without softmax, the attention neuron, and a 1x1
  projection with its batch norm, no neuron after it;
* the head reads the multi-level neuron's integer counts ``k`` (0 .. D), not ``k / D``.

The default neuron is the original's: ``multispike`` with D = 4, rounding half to even and the gradient
passing where 0 <= x <= 4 (``E_SPIKEFORMER_NEURON``); every other registered neuron can be chosen. The
original has no time axis (one pass, ``T = 1``); here ``time_steps`` (default 1) repeats the image, so
that a neuron with a state can run too.

Module names follow the original's state-dict layout, so its ``main_finetune.py`` checkpoints
(``{"model": ...}``) load strictly; its ``*spike*`` activations are ``*neuron*`` here (no weights).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ..neurons import NeuronSpec
from ..neurons.spec import Param
from ..spike_ops import SpikeConv2d, holds_backward_memory, norm_neuron, norm_then, spike_attention
from .base import NeuronArg, NeuronFactory, build_entry_point
from .registry import Architecture, at_least, register_architecture
from .sdt_v2 import MLP, MetaSpikeFormer, _cfg, check_stage_widths, merge_heads, split_heads

__all__ = ["E_SPIKEFORMER_NEURON", "EfficientSpikingTransformer", "SDT_V3"]

# the original's MultiSpike(min 0, max 4): torch.round, and the gradient inside [0, 4]
E_SPIKEFORMER_NEURON = NeuronSpec("multispike", levels=4, rounding="half_even", gradient_window="closed")


def _conv_bn(in_ch: int, out_ch: int, kernel: int, padding: int, groups: int, levels: int) -> nn.Sequential:
    return nn.Sequential(SpikeConv2d(in_ch, out_ch, kernel, padding=padding, groups=groups, bias=False, levels=levels),
                         nn.BatchNorm2d(out_ch))


@holds_backward_memory
class SepConvSpike(nn.Module):
    """Neuron, 1x1 (``dim`` -> 2 ``dim``) and batch norm, neuron, depthwise ``kernel`` and batch norm, neuron,
    1x1 back and batch norm."""

    def __init__(self, dim: int, neuron: NeuronFactory, levels: int, kernel: int = 7, padding: int = 3):
        super().__init__()
        hidden = 2 * dim
        self.neuron1, self.pwconv1 = neuron(), _conv_bn(dim, hidden, 1, 0, 1, levels)
        self.neuron2, self.dwconv = neuron(), _conv_bn(hidden, hidden, kernel, padding, hidden, levels)
        self.neuron3, self.pwconv2 = neuron(), _conv_bn(hidden, dim, 1, 0, 1, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.backward_memory
        s = norm_neuron(self.neuron1(x), self.pwconv1[1], self.neuron2, pre=(self.pwconv1[0],), memory=memory)
        s = norm_neuron(s, self.dwconv[1], self.neuron3, pre=(self.dwconv[0],), memory=memory)
        return norm_then(s, self.pwconv2[1], pre=(self.pwconv2[0],), memory=memory)


@register_notrace_module  # torch.fx records it as one call: it splits the heads by its input's shape
@holds_backward_memory
class SpikeAttention(nn.Module):
    """E-SpikeFormer's attention: ``((q kᵀ) v) 2 / sqrt(C // heads)`` of spikes, v ``value_ratio`` times wider."""

    def __init__(self, dim: int, num_heads: int, value_ratio: int, neuron: NeuronFactory, attn_neuron: NeuronFactory,
                 levels: int, attn_levels: int):
        super().__init__()
        self.num_heads, self.levels = num_heads, levels
        # the original multiplies by the double 2 * (C // heads) ** -0.5 once
        self.scale = (dim // num_heads) ** -0.5 * 2
        self.head_neuron = neuron()
        self.q_conv, self.k_conv = _conv_bn(dim, dim, 1, 0, 1, levels), _conv_bn(dim, dim, 1, 0, 1, levels)
        self.v_conv = _conv_bn(dim, dim * value_ratio, 1, 0, 1, levels)
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = attn_neuron()
        self.proj_conv = _conv_bn(dim * value_ratio, dim, 1, 0, 1, attn_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.head_neuron(x)
        q, k, v = (split_heads(norm_neuron(s, conv[1], getattr(self, f"{name}_neuron"), pre=(conv[0],),
                                           memory=self.backward_memory), self.num_heads)
                   for name, conv in (("q", self.q_conv), ("k", self.k_conv), ("v", self.v_conv)))
        y = spike_attention(q, k, v, self.scale, "qk_v_scaled", self.levels, self.backward_memory)
        y = self.attn_neuron(merge_heads(y)).unflatten(-1, x.shape[-2:])
        return norm_then(y, self.proj_conv[1], pre=(self.proj_conv[0],), memory=self.backward_memory)

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models, counted dense: ``A = q kᵀ`` (products
        of spikes: an AND of binary ones, a small integer product of multi-level ones, and their sums over the
        head width), ``A v`` (a binary v selects what is added; a multi-level one multiplies) and the scale."""
        t, b, c, h, w = inputs[0].shape
        n, d = h * w, c // self.num_heads
        dv = self.v_conv[0].out_channels // self.num_heads
        groups = t * b * self.num_heads
        ops = {"and" if self.levels == 1 else "mul": groups * n * n * d,
               "add": groups * (n * n * (d - 1) + n * dv * (n - 1))}
        ops["mul"] = ops.get("mul", 0) + groups * (n * dv + (n * n * dv if self.levels != 1 else 0))
        return ops


class Block(nn.Module):
    """``x + SepConvSpike(x)`` (3x3), then ``+ attention(x)``, then ``+ MLP(x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, value_ratio: int, neuron: NeuronFactory,
                 attn_neuron: NeuronFactory, levels: int, attn_levels: int):
        super().__init__()
        self.conv = SepConvSpike(dim, neuron, levels, kernel=3, padding=1)
        self.attn = SpikeAttention(dim, num_heads, value_ratio, neuron, attn_neuron, levels, attn_levels)
        self.mlp = MLP(dim, dim * mlp_ratio, neuron, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.conv(x)
        x = x + self.attn(x)
        return x + self.mlp(x)

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the three residual additions."""
        return {"add": 3 * output.numel()}


class _CountsLinear(nn.Linear):
    """The classifier on the head neuron's counts ``k`` (0 .. D): the operation counter counts k as k events."""

    levels = 1
    spike_count_input = True


class EfficientSpikingTransformer(MetaSpikeFormer):
    """E-SpikeFormer (SDT-V3 base models).

    Args (timm's names where timm has one):
        img_size, in_chans, num_classes, embed_dims, num_heads, mlp_ratio, depths: as ``MetaSpikeFormer``'s.
        value_ratio: the width of v and of the attention's output per unit of width (4 in the original).
        time_steps: T, the steps the image is repeated over; 1, one pass, as in the original.
        neuron: by default the original's multi-level neuron (``E_SPIKEFORMER_NEURON``); attn_neuron: the
            same unless given (the original's attention neuron has no threshold of its own); tet: as
            ``SpikingModel``'s.

    The head reads the head neuron's output times its levels: the integer counts of a multi-level neuron,
    the spikes themselves of a binary one.
    """

    architecture = "sdt_v3"
    family = "efficient_spiking_transformer_s"
    default_neuron = E_SPIKEFORMER_NEURON

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (32, 64, 128, 192), num_heads: int = 8, mlp_ratio: int = 4,
                 depths: Sequence[int] = (6, 2), value_ratio: int = 4, time_steps: int = 1, neuron: NeuronArg = None,
                 attn_neuron: NeuronArg = None, tet: bool = False, **neuron_settings: Any):
        nn.Module.__init__(self)  # V2's constructor resolves V2's settings and adds kd: V3 sets itself up here
        settings = SDT_V3.resolve(self.family, dict(embed_dims=list(embed_dims), num_heads=num_heads,
                                                    mlp_ratio=mlp_ratio, depths=list(depths), value_ratio=value_ratio))
        neuron_factory, attn_factory = self.set_up(
            dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, time_steps=time_steps, tet=tet,
                 **settings), neuron, attn_neuron, None, neuron_settings)
        self.build(settings, neuron_factory, attn_factory)
        self.head = _CountsLinear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def sep_conv(self, dim: int, neuron: NeuronFactory, levels: int) -> nn.Module:
        return SepConvSpike(dim, neuron, levels)

    def block(self, dim: int, settings: Mapping[str, Any], neuron: NeuronFactory, attn_neuron: NeuronFactory,
              levels: int, attn_levels: int) -> nn.Module:
        return Block(dim, settings["num_heads"], settings["mlp_ratio"], settings["value_ratio"], neuron, attn_neuron,
                     levels, attn_levels)

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """The head neuron's counts on the features' mean over the grid, ``[T, B, C]`` (the original's
        ``MultiSpike(Norm=1)``: ``k``, exactly ``(k / D) D``, with the gradient of ``k / D`` times D)."""
        return self.neuron(x.flatten(3).mean(3)) * self.spike_levels

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        super().reset_classifier(num_classes, global_pool)
        if num_classes > 0:
            self.head = _CountsLinear(self.head_hidden_size, num_classes)


def _init_weights(m: nn.Module) -> None:
    """The original's: the head from a truncated normal (std 0.02), bias 0; the rest keeps PyTorch's defaults."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _is_v3(state_dict: Mapping) -> bool:
    """SDT-V3's weights: a separable convolution as the first transformer block's first branch."""
    return "block3.0.conv.pwconv1.0.weight" in state_dict or "ConvBlock1_1.0.Conv.pwconv1.1.weight" in state_dict


_IMAGENET = {"img_size": 224, "num_classes": 1000}
SIZES = {
    "efficient_spiking_transformer_t": {**_IMAGENET, "embed_dims": [24, 48, 96, 128]},
    "efficient_spiking_transformer_s": {**_IMAGENET, "embed_dims": [32, 64, 128, 192]},
    "efficient_spiking_transformer_m": {**_IMAGENET, "embed_dims": [48, 96, 192, 240]},
    "efficient_spiking_transformer_l": {**_IMAGENET, "embed_dims": [64, 128, 256, 360]},
}

SDT_V3 = register_architecture(Architecture(
    name="sdt_v3",
    title="SDT-V3, E-SpikeFormer base models (Yao et al., TPAMI 2025)",
    reference="BICLab/Spike-Driven-Transformer-V3",
    settings={
        "embed_dims": Param([32, 64, 128, 192], "the four stages' widths (the first layer makes e0 / 2)", kind=list),
        "num_heads": Param(8, "attention heads of stages 3 and 4", kind=int, check=at_least(1)),
        "mlp_ratio": Param(4, "hidden width / width of every MLP and convolutional block (an integer)", kind=int,
                           check=at_least(1)),
        "depths": Param([6, 2], "transformer blocks in stages 3 and 4", kind=list),
        "value_ratio": Param(4, "width of v and of the attention's output / the stage's width", kind=int,
                             check=at_least(1)),
    },
    sizes=SIZES,
    check=check_stage_widths,
    original_args=("time_steps", "nb_classes"),
    matches=_is_v3,
    label=lambda s: "-".join(map(str, s["embed_dims"])),
    feature_stages=4,
))

default_cfgs = generate_default_cfgs({f"{name}.untrained": _cfg(crop_pct=224 / 232) for name in SIZES})


@register_model
def efficient_spiking_transformer_t(pretrained: bool = False, **kwargs) -> EfficientSpikingTransformer:
    """E-SpikeFormer 2.7 M: widths 24-48-96-128, 8 heads, 224 px, one pass of multi-level spikes.

    ``pretrained=True`` loads the weights named by ``pretrained_cfg_overlay=dict(file=...)`` (an exported
    model.safetensors) or by an exported folder given as ``timm.create_model("local-dir:FOLDER")``.
    """
    return build_entry_point(EfficientSpikingTransformer, "efficient_spiking_transformer_t", pretrained, **kwargs)


@register_model
def efficient_spiking_transformer_s(pretrained: bool = False, **kwargs) -> EfficientSpikingTransformer:
    """E-SpikeFormer 5.1 M: widths 32-64-128-192."""
    return build_entry_point(EfficientSpikingTransformer, "efficient_spiking_transformer_s", pretrained, **kwargs)


@register_model
def efficient_spiking_transformer_m(pretrained: bool = False, **kwargs) -> EfficientSpikingTransformer:
    """E-SpikeFormer 10.0 M: widths 48-96-192-240."""
    return build_entry_point(EfficientSpikingTransformer, "efficient_spiking_transformer_m", pretrained, **kwargs)


@register_model
def efficient_spiking_transformer_l(pretrained: bool = False, **kwargs) -> EfficientSpikingTransformer:
    """E-SpikeFormer 19.0 M: widths 64-128-256-360."""
    return build_entry_point(EfficientSpikingTransformer, "efficient_spiking_transformer_l", pretrained, **kwargs)
