"""Spikformer (Zhou et al., ICLR 2023), with a pluggable spiking neuron.

The original code holds two different models under one name, and both are here, chosen by ``layout``
(fixed per entry point):

* ``"cifar"`` (``cifar10/model.py``): tokens ``[T, B, N, D]``; q, k, v, the attention's projection and
  the MLP are ``nn.Linear`` (with bias) followed by a ``BatchNorm1d`` on the transposed ``[T*B, D, N]``;
  attention ``((q kᵀ) 0.125) v``; max-pools after the third and fourth SPS neurons; every linear layer
  starts from a truncated normal (std 0.02).
* ``"imagenet"`` (``imagenet/model.py``): tensors ``[T, B, C, H, W]``; q, k, v are ``Conv1d`` without
  bias, the projection a ``Conv1d``, the MLP ``Conv2d`` 1x1 with ``BatchNorm2d``; attention
  ``(q (kᵀ v)) 0.125``; a max-pool after every SPS neuron; only the head starts from a truncated normal.

Both: the neuron comes before each max-pool; there is no neuron on a block's input, so the q, k, v and
first MLP layers read the residual stream, a sum of spikes; the attention's neuron keeps its own
threshold (``attn_v_threshold``); the head averages the last block's output over the tokens, then over
time, then applies a ``Linear``. Every operation is the original's, in its order and on its layouts,
so that fp32 logits, gradients and batch-norm statistics equal the original's bit for bit.

Module names follow the original's state-dict layout, so its checkpoints load strictly once
``original_state_dict`` has dropped its dead LayerNorms (``block.i.norm1``, ``norm2``: built, never
called) and renamed its neuron layers (``*_lif`` here ``*_neuron``).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_function, register_notrace_module, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ..errors import ConfigError
from ..neurons import SpikingNeuron
from ..neurons.spec import Param
from ..spike_ops import (SpikeConv1d, SpikeConv2d, SpikeLinear, SpikeMaxPool2d, holds_backward_memory, norm_neuron,
                         norm_then, per_step, recomputing, spike_attention)
from .base import NeuronArg, NeuronFactory, SpikingModel, build_entry_point, check_patch_splitting
from .registry import Architecture, at_least, positive, register_architecture

__all__ = ["LAYOUTS", "SPIKFORMER", "Spikformer"]

LAYOUTS = ("cifar", "imagenet")
_SCALE = 0.125  # the original's fixed attention scale (1/8 whatever the head width)


# ------------------------------------------------------------------ layers


class _SwapLastTwo(nn.Module):
    """``x.transpose(-1, -2)``: tokens ``[..., N, D]`` as channels ``[..., D, N]`` for a ``BatchNorm1d``."""

    time_major = True  # a norm_then pre layer that needs no folding of time into the batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(-1, -2)
        # the original normalises the view, and eager results depend on it; see _fire_tokens for torch.compile
        return x.contiguous() if torch.compiler.is_compiling() else x


class _StreamLinear(nn.Linear):
    """A linear layer on the residual stream ``[T, B, N, D]``, a sum of spikes (integers >= 0 for binary
    spikes): the operation counter counts a value k as k events (``spike_count_input``)."""

    time_major = True
    spike_count_input = True


def _stream_fed(layer: nn.Module) -> nn.Module:
    """``layer``, marked as reading the residual stream (see ``_StreamLinear``)."""
    layer.spike_count_input = True
    return layer


def _pool(enabled: bool, levels: int) -> nn.Module:
    return SpikeMaxPool2d(kernel_size=3, stride=2, padding=1, levels=levels) if enabled else nn.Identity()


def _fire_tokens(neuron: SpikingNeuron, y: torch.Tensor, contiguous: bool) -> torch.Tensor:
    """The neuron on a ``BatchNorm1d`` output ``[T, B, D, N]``, turned back to tokens ``[T, B, N, D]`` first
    as the original does (``contiguous``: a copy, for q, k, v and the MLP; else the transposed view, for
    the projection). The layout of the gradient that reaches the batch norm changes its sums: a neuron
    run on ``[T, B, D, N]`` moves the gradients by an ulp.

    torch.compile (PyTorch 2.x) fails to differentiate a batch norm whose input or output gradient is a
    transposed view ("view size is not compatible"), so there the norm reads a copy (``_SwapLastTwo``) and
    the neuron runs on its output as it is; compiled results are not bit-exact anyway."""
    if torch.compiler.is_compiling():
        return neuron(y).transpose(-1, -2)
    y = y.transpose(-1, -2)
    if contiguous:
        y = y.contiguous()
    # called as a module, so that its hooks and spike counts see it, except when backward recomputes it
    return neuron.multi_step(y) if recomputing() else neuron(y)


# torch.fx records the call (its name is public: fx wraps no name that starts with "_"): it hands norm_then
# a function, which a graph cannot hold as an argument
@register_notrace_function
def tokens_then(x: torch.Tensor, linear: nn.Linear, norm: nn.BatchNorm1d, neuron: SpikingNeuron,
                 contiguous: bool = True, memory: str = "auto") -> torch.Tensor:
    """``neuron(norm(linear(x)ᵀ)ᵀ)`` for tokens ``[T, B, N, D]``, the batch norm on ``[T*B, D, N]``; ``memory``:
    the calling block's memory mode."""
    fire = functools.partial(_fire_tokens, neuron, contiguous=contiguous)
    return norm_then(x, norm, fire, pre=(linear, _SwapLastTwo()), fn_params=tuple(neuron.parameters()),
                     memory=memory)


# ------------------------------------------------------------------ blocks


@holds_backward_memory  # of its norm_neuron calls (spike_ops.set_backward_memory)
class SpikingPatchSplitting(nn.Module):
    """SPS: four conv-BN-neuron stages (widths D/8, D/4, D/2, D), each neuron followed by a max-pool where
    ``pools`` says so, then a spiking 3x3 position conv on the pooled spikes, added to them."""

    def __init__(self, in_chans: int, embed_dim: int, pools: tuple, neuron: NeuronFactory, levels: int,
                 as_tokens: bool):
        super().__init__()
        d = embed_dim
        self.as_tokens = as_tokens  # out as tokens [T, B, N, D] (the CIFAR model), else [T, B, D, H, W]
        self.proj_conv = nn.Conv2d(in_chans, d // 8, 3, padding=1, bias=False)  # sees the image
        self.proj_bn, self.proj_neuron, self.maxpool = nn.BatchNorm2d(d // 8), neuron(), _pool(pools[0], levels)
        self.proj_conv1 = SpikeConv2d(d // 8, d // 4, 3, padding=1, bias=False, levels=levels)
        self.proj_bn1, self.proj_neuron1, self.maxpool1 = nn.BatchNorm2d(d // 4), neuron(), _pool(pools[1], levels)
        self.proj_conv2 = SpikeConv2d(d // 4, d // 2, 3, padding=1, bias=False, levels=levels)
        self.proj_bn2, self.proj_neuron2, self.maxpool2 = nn.BatchNorm2d(d // 2), neuron(), _pool(pools[2], levels)
        self.proj_conv3 = SpikeConv2d(d // 2, d, 3, padding=1, bias=False, levels=levels)
        self.proj_bn3, self.proj_neuron3, self.maxpool3 = nn.BatchNorm2d(d), neuron(), _pool(pools[3], levels)
        self.rpe_conv = SpikeConv2d(d, d, 3, padding=1, bias=False, levels=levels)
        self.rpe_bn, self.rpe_neuron = nn.BatchNorm2d(d), neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.backward_memory
        s = norm_neuron(x, self.proj_bn, self.proj_neuron, pre=(self.proj_conv,), memory=memory)
        s = norm_neuron(s, self.proj_bn1, self.proj_neuron1, pre=(self.maxpool, self.proj_conv1), memory=memory)
        s = norm_neuron(s, self.proj_bn2, self.proj_neuron2, pre=(self.maxpool1, self.proj_conv2), memory=memory)
        s = norm_neuron(s, self.proj_bn3, self.proj_neuron3, pre=(self.maxpool2, self.proj_conv3), memory=memory)
        pooled = per_step(self.maxpool3, s)
        x = norm_neuron(pooled, self.rpe_bn, self.rpe_neuron, pre=(self.rpe_conv,), memory=memory) + pooled
        return x.flatten(-2).transpose(-1, -2) if self.as_tokens else x

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the position code's residual."""
        return {"add": output.numel()}


@register_notrace_module  # torch.fx records it as one call: it splits the heads by its input's shape
@holds_backward_memory  # of its spike products and norm_neuron calls (spike_ops.set_backward_memory)
class SpikingSelfAttention(nn.Module):
    """SSA: spikes q, k, v of the residual stream, their products without softmax scaled by 0.125, the
    attention neuron, and a projection to spikes.

    Heads split the channels head-major (channel ``head * D/heads + j``). The CIFAR layout computes
    ``((q kᵀ) 0.125) v`` over tokens ``[T, B, N, D]``, the ImageNet layout ``(q (kᵀ v)) 0.125`` over
    ``[T, B, C, H, W]``.
    """

    def __init__(self, dim: int, num_heads: int, layout: str, neuron: NeuronFactory, attn_neuron: NeuronFactory,
                 levels: int, attn_levels: int):
        super().__init__()
        self.num_heads, self.layout, self.levels = num_heads, layout, levels
        for name in ("q", "k", "v"):
            if layout == "cifar":
                setattr(self, f"{name}_linear", _StreamLinear(dim, dim))
            else:
                setattr(self, f"{name}_conv", _stream_fed(nn.Conv1d(dim, dim, 1, bias=False)))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_neuron", neuron())
        self.attn_neuron = attn_neuron()
        if layout == "cifar":
            self.proj_linear = SpikeLinear(dim, dim, levels=attn_levels)
        else:
            self.proj_conv = SpikeConv1d(dim, dim, 1, levels=attn_levels)
        self.proj_bn, self.proj_neuron = nn.BatchNorm1d(dim), neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tokens(x) if self.layout == "cifar" else self._channels(x)

    def _heads(self, s: torch.Tensor) -> torch.Tensor:
        """Spikes ``[T, B, N, D]`` -> ``[T, B, heads, N, D/heads]``."""
        t, b, n, c = s.shape
        return s.reshape(t, b, n, self.num_heads, c // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        t, b, n, c = x.shape
        # one node receives the three projections' gradients, as the original's x.flatten(0, 1) does,
        # so that they are summed in its order
        shared = x.view(x.shape)
        memory = self.backward_memory
        q, k, v = (self._heads(tokens_then(shared, getattr(self, f"{name}_linear"), getattr(self, f"{name}_bn"),
                                            getattr(self, f"{name}_neuron"), memory=memory)) for name in ("q", "k", "v"))
        y = spike_attention(q, k, v, _SCALE, "qk_v", self.levels, memory)
        y = self.attn_neuron(y.transpose(2, 3).reshape(t, b, n, c).contiguous())
        return tokens_then(y, self.proj_linear, self.proj_bn, self.proj_neuron, contiguous=False, memory=memory)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        t, b, c, height, width = x.shape
        n = height * width
        shared = x.flatten(3)  # [T, B, C, N], the node that receives the three projections' gradients
        memory = self.backward_memory
        q, k, v = (
            self._heads(norm_neuron(shared, getattr(self, f"{name}_bn"), getattr(self, f"{name}_neuron"),
                                    pre=(getattr(self, f"{name}_conv"),), memory=memory).transpose(-1, -2))
            for name in ("q", "k", "v")
        )
        y = spike_attention(q, k, v, _SCALE, "q_kv", self.levels, memory)
        y = self.attn_neuron(y.transpose(3, 4).reshape(t, b, c, n).contiguous())
        return norm_neuron(y, self.proj_bn, self.proj_neuron, pre=(self.proj_conv,), memory=memory).reshape(
            t, b, c, height, width)

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models, counted dense (every product of
        the matrices' shapes, whatever the spikes): the products of two spike matrices (an AND of binary
        spikes, a small integer product of multi-level ones) and their sums; the product of a spike
        matrix with the integer-valued one (a binary spike selects what is added: adds only; a
        multi-level spike multiplies); and the 0.125 scale, one multiply per element it scales."""
        x = inputs[0]  # [T, B, N, D] or [T, B, D, H, W]
        t, b = x.shape[:2]
        c = x.shape[-1] if self.layout == "cifar" else x.shape[2]
        n = x[0, 0].numel() // c
        groups, d = t * b * self.num_heads, c // self.num_heads
        product = "and" if self.levels == 1 else "mul"
        if self.layout == "cifar":  # A = q kᵀ (N x N, d terms), A 0.125, A v (N x d, N terms)
            spike_products, spike_terms, scaled = n * n * d, n * n * (d - 1), n * n
            mixed_products, mixed_terms = n * d * n, n * d * (n - 1)
        else:  # M = kᵀ v (d x d, N terms), q M (N x d, d terms), then 0.125
            spike_products, spike_terms, scaled = d * d * n, d * d * (n - 1), n * d
            mixed_products, mixed_terms = n * d * d, n * d * (d - 1)
        ops = {product: groups * spike_products, "add": groups * (spike_terms + mixed_terms)}
        ops["mul"] = ops.get("mul", 0) + groups * (scaled + (mixed_products if self.levels != 1 else 0))
        return ops


@holds_backward_memory  # of its norm_neuron calls (spike_ops.set_backward_memory)
class SpikingMLP(nn.Module):
    """Two layers, each followed by a batch norm and a neuron: ``fc1`` reads the residual stream, ``fc2`` spikes."""

    def __init__(self, dim: int, hidden: int, layout: str, neuron: NeuronFactory, levels: int):
        super().__init__()
        self.layout = layout
        if layout == "cifar":
            self.fc1_linear, self.fc1_bn = _StreamLinear(dim, hidden), nn.BatchNorm1d(hidden)
        else:
            self.fc1_conv, self.fc1_bn = _stream_fed(nn.Conv2d(dim, hidden, 1)), nn.BatchNorm2d(hidden)
        self.fc1_neuron = neuron()
        if layout == "cifar":
            self.fc2_linear, self.fc2_bn = SpikeLinear(hidden, dim, levels=levels), nn.BatchNorm1d(dim)
        else:
            self.fc2_conv, self.fc2_bn = SpikeConv2d(hidden, dim, 1, levels=levels), nn.BatchNorm2d(dim)
        self.fc2_neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.backward_memory
        if self.layout == "cifar":
            s = tokens_then(x, self.fc1_linear, self.fc1_bn, self.fc1_neuron, memory=memory)
            return tokens_then(s, self.fc2_linear, self.fc2_bn, self.fc2_neuron, memory=memory)
        s = norm_neuron(x, self.fc1_bn, self.fc1_neuron, pre=(self.fc1_conv,), memory=memory)
        return norm_neuron(s, self.fc2_bn, self.fc2_neuron, pre=(self.fc2_conv,), memory=memory)


class Block(nn.Module):
    """``x + SSA(x)``, then ``+ MLP(x)``; no neuron on the block's input."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layout: str, neuron: NeuronFactory,
                 attn_neuron: NeuronFactory, levels: int, attn_levels: int):
        super().__init__()
        self.attn = SpikingSelfAttention(dim, num_heads, layout, neuron, attn_neuron, levels, attn_levels)
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), layout, neuron, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the two residual additions."""
        return {"add": 2 * output.numel()}


# ------------------------------------------------------------------ the model


class Spikformer(SpikingModel):
    """Spikformer.

    Args (timm's names where timm has one):
        img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio: sizes.
        time_steps: T, the time steps a 4-D image is repeated over (a 5-D ``[B, T, C, H, W]`` input brings its
            own); the original ImageNet model fixes T = 4.
        layout: ``"cifar"`` or ``"imagenet"``, the original's two models (see the module's docstring).
        neuron, attn_neuron, and the neuron's settings as keywords: see ``SpikingModel``; the neuron
            after the attention's products has ``attn_v_threshold`` (0.5 in the original) by default.
        tet: return per-step logits ``[T, B, K]`` (the head on each step's token mean) for the TET loss.

    ``forward_features``: the residual stream after the last block, time-major: tokens ``[T, B, N, D]``
    (CIFAR layout, N = H' W' row by row) or ``[T, B, D, H', W']`` (ImageNet layout); the stages are the
    SPS (``patch_embed``) and each block; timm's contract as ``SpikingModel`` tells.
    """

    architecture = "spikformer"

    def __init__(
        self,
        img_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        embed_dim: int = 384,
        depth: int = 4,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        time_steps: int = 4,
        layout: str = "cifar",
        neuron: NeuronArg = None,
        attn_neuron: NeuronArg = None,
        attn_v_threshold: float = 0.5,
        tet: bool = False,
        **neuron_settings: Any,
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        settings = SPIKFORMER.resolve(_ENTRY_OF_LAYOUT[layout], dict(
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            attn_v_threshold=attn_v_threshold))
        neuron_factory, attn_factory = self.set_up(
            dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, time_steps=time_steps, tet=tet,
                 layout=layout, **settings),
            neuron, attn_neuron, settings["attn_v_threshold"], neuron_settings)
        embed_dim, depth, num_heads, mlp_ratio = (settings[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio"))
        self.layout = layout
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim

        levels, attn_levels = self.spike_levels, attn_factory().output_levels()
        pools = (False, False, True, True) if layout == "cifar" else (True, True, True, True)
        self.patch_embed = SpikingPatchSplitting(in_chans, embed_dim, pools, neuron_factory, levels,
                                                 as_tokens=layout == "cifar")
        self.block = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, layout, neuron_factory, attn_factory, levels, attn_levels)
            for _ in range(depth)
        ])
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        # each max-pool of the SPS (3x3, stride 2) halves the grid
        self.set_up_features(embed_dim, reduction=2 ** sum(pools))

    def classify(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean over the tokens, then over time (per step with ``tet``), then the head."""
        x = x.mean(2) if self.layout == "cifar" else x.flatten(3).mean(3)  # [T, B, D]
        if not self.tet:
            x = x.mean(0)
        return x if pre_logits else self.head(x)

    def stage_map(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """CIFAR tokens ``[T, B, N, D]`` back on their grid, ``[T, B, D, H', W']`` (the SPS flattened it row by
        row); the ImageNet layout's stages are maps already."""
        return x.transpose(-1, -2).unflatten(-1, grid) if self.layout == "cifar" else x


def _init_weights(m: nn.Module) -> None:
    """The original's: every ``nn.Linear`` (in the ImageNet layout only the head is one) from a truncated
    normal, std 0.02, bias 0; convolutions and batch norms keep PyTorch's defaults."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------ the original code's checkpoints

# The LayerNorms every block builds and never calls.
_DEAD_KEYS = re.compile(r"^block\.\d+\.norm[12]\.(weight|bias)$")
# The original's neuron layers (proj_lif1, q_lif, attn_lif, ...) under our names (proj_neuron1, ...).
_NEURON_KEY = re.compile(r"^((?:.*\.)?\w+?)_lif(\d*)(\..+)$")


def original_state_dict(state_dict: Mapping) -> dict:
    """The original code's state dict under our names: its dead LayerNorms dropped, its neuron layers renamed
    (their state, if a neuron kept any)."""
    out = {}
    for key, value in state_dict.items():
        if _DEAD_KEYS.match(key):
            continue
        out[_NEURON_KEY.sub(r"\1_neuron\2\3", key)] = value
    return out


def _is_spikformer(state_dict: Mapping) -> bool:
    """Spikformer's weights: q of the first block a linear layer (CIFAR) or a Conv1d, a 3-D weight (ImageNet;
    SDT's 1x1 Conv2d is 4-D)."""
    if "patch_embed.rpe_conv.weight" not in state_dict:
        return False
    q = state_dict.get("block.0.attn.q_conv.weight")
    return "block.0.attn.q_linear.weight" in state_dict or (q is not None and q.dim() == 3)


_IMAGENET = {"layout": "imagenet", "img_size": 224, "num_classes": 1000}
SIZES = {
    "spikformer_cifar": {"layout": "cifar"},
    "spikformer": {**_IMAGENET, "depth": 8, "embed_dim": 512, "num_heads": 8},
    "spikformer_8_384": {**_IMAGENET, "depth": 8, "embed_dim": 384, "num_heads": 8},
    "spikformer_6_512": {**_IMAGENET, "depth": 6, "embed_dim": 512, "num_heads": 8},
    "spikformer_8_512": {**_IMAGENET, "depth": 8, "embed_dim": 512, "num_heads": 8},
    "spikformer_10_512": {**_IMAGENET, "depth": 10, "embed_dim": 512, "num_heads": 8},
    "spikformer_8_768": {**_IMAGENET, "depth": 8, "embed_dim": 768, "num_heads": 8},
}
_ENTRY_OF_LAYOUT = {"cifar": "spikformer_cifar", "imagenet": "spikformer"}  # named in messages

SPIKFORMER = register_architecture(Architecture(
    name="spikformer",
    title="Spikformer (Zhou et al., ICLR 2023)",
    reference="ZK-Zhou/spikformer",
    settings={
        "depth": Param(4, "transformer blocks (the original's layer)", kind=int, check=at_least(1)),
        "embed_dim": Param(384, "embedding width D (the original's dim); the SPS widths are D/8, D/4, D/2",
                           kind=int, check=at_least(8)),
        "num_heads": Param(12, "attention heads", kind=int, check=at_least(1)),
        "mlp_ratio": Param(4.0, "MLP hidden width / embed_dim", check=positive),
        "attn_v_threshold": Param(0.5, "threshold of the neuron after the attention's products", check=positive),
    },
    sizes=SIZES,
    check=check_patch_splitting,
    original_state_dict=original_state_dict,
    # the model settings cifar10/train.py's pickled argparse Namespace records, under its names
    original_args=("dim", "layer", "num_heads", "mlp_ratio", "img_size", "num_classes", "time_step"),
    matches=_is_spikformer,
))


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "first_conv": "patch_embed.proj_conv",
        "classifier": "head",
        **kwargs,
    }


# pool_size: the grid after the SPS (two max-pools at 32 px, four at 224 px)
_CIFAR10 = dict(num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), mean=(0.4914, 0.4822, 0.4465),
                std=(0.2470, 0.2435, 0.2616))
_IMAGENET_CFG = dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(14, 14), mean=IMAGENET_DEFAULT_MEAN,
                     std=IMAGENET_DEFAULT_STD)
default_cfgs = generate_default_cfgs({
    f"{name}.untrained": _cfg(**(_CIFAR10 if sizes["layout"] == "cifar" else _IMAGENET_CFG))
    for name, sizes in SIZES.items()
})


def _entry(variant: str, pretrained: bool, kwargs: dict) -> Spikformer:
    return build_entry_point(Spikformer, variant, pretrained, **kwargs)


@register_model
def spikformer_cifar(pretrained: bool = False, **kwargs) -> Spikformer:
    """The original's CIFAR model (``cifar10/model.py``): 4-384, 12 heads, mlp 4, T = 4, 32 px, 10 classes.

    ``pretrained=True`` loads the weights named by ``pretrained_cfg_overlay=dict(file=...)`` (an exported
    model.safetensors) or by an exported folder given as ``timm.create_model("local-dir:FOLDER")``.
    """
    return _entry("spikformer_cifar", pretrained, kwargs)


@register_model
def spikformer(pretrained: bool = False, **kwargs) -> Spikformer:
    """The original's ImageNet model (``imagenet/model.py``) at its registered size: 8-512, 8 heads, 224 px."""
    return _entry("spikformer", pretrained, kwargs)


@register_model
def spikformer_8_384(pretrained: bool = False, **kwargs) -> Spikformer:
    """The paper's ImageNet Spikformer-8-384 (ImageNet layout, 8 heads)."""
    return _entry("spikformer_8_384", pretrained, kwargs)


@register_model
def spikformer_6_512(pretrained: bool = False, **kwargs) -> Spikformer:
    """The paper's ImageNet Spikformer-6-512 (ImageNet layout, 8 heads)."""
    return _entry("spikformer_6_512", pretrained, kwargs)


@register_model
def spikformer_8_512(pretrained: bool = False, **kwargs) -> Spikformer:
    """The paper's ImageNet Spikformer-8-512 (ImageNet layout, 8 heads): the registered ``spikformer``."""
    return _entry("spikformer_8_512", pretrained, kwargs)


@register_model
def spikformer_10_512(pretrained: bool = False, **kwargs) -> Spikformer:
    """The paper's ImageNet Spikformer-10-512 (ImageNet layout, 8 heads)."""
    return _entry("spikformer_10_512", pretrained, kwargs)


@register_model
def spikformer_8_768(pretrained: bool = False, **kwargs) -> Spikformer:
    """The paper's ImageNet Spikformer-8-768 (ImageNet layout, 8 heads)."""
    return _entry("spikformer_8_768", pretrained, kwargs)
