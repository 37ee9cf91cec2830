"""SDT-V2, Meta-SpikeFormer (Yao et al., ICLR 2024), with a pluggable spiking neuron.

A MetaFormer of four stages on ``[T, B, C, H, W]``: two stages of convolutional blocks (separable
convolutions, then two 3x3 convolutions), two of transformer blocks whose q, k, v and projection are
re-parameterisable convolutions (``RepConv``: 1x1, a batch norm whose padding border holds the value the
norm gives a zero input, depthwise 3x3 without padding, 1x1, batch norm). Each stage starts with a
down-sampling convolution (stride 2, the last stride 1). The residual streams are real-valued; the
neuron sits at the start of each branch and before each convolution that reads spikes.

Time: the original repeats the image over ``model.T`` steps, an attribute it sets to 1 (T = 1 from
scratch, then T = 4 to fine-tune); here ``time_steps``, default 1. Batch norms share statistics over
time and batch, as the original's do on ``[T*B, ...]``.

Every operation is the original's, in its order and on its layouts, so that fp32 logits, gradients and
batch-norm statistics equal the original's for the same weights; module names follow its state-dict
layout (``downsample1_1``, ``ConvBlock1_1.0``, ``block3.j.attn.q_conv.0.body.1.bn``, ...), so its
``main_finetune.py`` checkpoints (``{"model": ...}``) load strictly. Its neuron layers ``*lif*`` are
``*neuron*`` here; they hold no weights.

SDT-V3 (``sdt_v3.py``) keeps this skeleton and replaces the blocks: ``MetaSpikeFormer`` builds its
stages from the block classes a subclass names.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ..neurons.spec import Param
from ..spike_ops import SpikeConv1d, SpikeConv2d, holds_backward_memory, norm_neuron, norm_then, spike_attention
from .base import NeuronArg, NeuronFactory, SpikingModel, build_entry_point
from .registry import Architecture, at_least, positive, register_architecture

__all__ = ["MetaSpikeFormer", "SDT_V2", "check_stage_widths"]

_SCALE = 0.125  # the original's fixed attention scale, whatever the head width


# ------------------------------------------------------------------ layers shared with SDT-V3


@holds_backward_memory  # of its norm_then (spike_ops.set_backward_memory)
class DownSampling(nn.Module):
    """A neuron (not on the image), then a strided convolution with bias and its batch norm."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, neuron: Optional[NeuronFactory],
                 levels: int):
        super().__init__()
        if neuron is None:  # the first layer reads the real-valued image
            self.encode_conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding)
        else:
            self.encode_neuron = neuron()
            self.encode_conv = SpikeConv2d(in_ch, out_ch, kernel, stride, padding, levels=levels)
        self.encode_bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "encode_neuron"):
            x = self.encode_neuron(x)
        return norm_then(x, self.encode_bn, pre=(self.encode_conv,), memory=self.backward_memory)


@holds_backward_memory
class ConvBlock(nn.Module):
    """``x + sep_conv(x)``, then that plus two spiking 3x3 convolutions (``dim`` -> ``mlp_ratio dim`` -> ``dim``)."""

    def __init__(self, dim: int, mlp_ratio: int, sep_conv: Callable[[int], nn.Module], neuron: NeuronFactory,
                 levels: int):
        super().__init__()
        self.Conv = sep_conv(dim)  # the original's key (capital C)
        self.neuron1 = neuron()
        self.conv1 = SpikeConv2d(dim, dim * mlp_ratio, 3, padding=1, bias=False, levels=levels)
        self.bn1 = nn.BatchNorm2d(dim * mlp_ratio)
        self.neuron2 = neuron()
        self.conv2 = SpikeConv2d(dim * mlp_ratio, dim, 3, padding=1, bias=False, levels=levels)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv(x) + x
        s = norm_neuron(self.neuron1(x), self.bn1, self.neuron2, pre=(self.conv1,), memory=self.backward_memory)
        return norm_then(s, self.bn2, pre=(self.conv2,), memory=self.backward_memory) + x

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the two residual additions."""
        return {"add": 2 * output.numel()}


@holds_backward_memory
class MLP(nn.Module):
    """On tokens ``[T, B, C, N]``: neuron, Conv1d (bias), batch norm, neuron, Conv1d (bias), batch norm."""

    def __init__(self, dim: int, hidden: int, neuron: NeuronFactory, levels: int):
        super().__init__()
        self.fc1_neuron = neuron()
        self.fc1_conv, self.fc1_bn = SpikeConv1d(dim, hidden, 1, levels=levels), nn.BatchNorm1d(hidden)
        self.fc2_neuron = neuron()
        self.fc2_conv, self.fc2_bn = SpikeConv1d(hidden, dim, 1, levels=levels), nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = norm_neuron(self.fc1_neuron(x.flatten(3)), self.fc1_bn, self.fc2_neuron, pre=(self.fc1_conv,),
                        memory=self.backward_memory)
        return norm_then(s, self.fc2_bn, pre=(self.fc2_conv,), memory=self.backward_memory).reshape(x.shape)


def split_heads(s: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Channels ``[T, B, C, H, W]`` -> heads ``[T, B, heads, N, C/heads]`` (channel ``head * C/heads + j``)."""
    t, b, c = s.shape[:3]
    tokens = s.flatten(3).transpose(-1, -2)  # [T, B, N, C]
    return tokens.reshape(t, b, -1, num_heads, c // num_heads).permute(0, 1, 3, 2, 4).contiguous()


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """Heads ``[T, B, heads, N, d]`` -> channels ``[T, B, heads * d, N]`` (head-major)."""
    t, b, heads, n, d = y.shape
    return y.transpose(3, 4).reshape(t, b, heads * d, n).contiguous()


# ------------------------------------------------------------------ SDT-V2's blocks


@holds_backward_memory
class SepConv(nn.Module):
    """Neuron, 1x1 (``dim`` -> 2 ``dim``), batch norm, neuron, depthwise 7x7, 1x1 back, batch norm: the
    depthwise output goes to the second 1x1 real-valued, with no norm or neuron between them."""

    def __init__(self, dim: int, neuron: NeuronFactory, levels: int, kernel: int = 7, padding: int = 3):
        super().__init__()
        hidden = 2 * dim
        self.neuron1 = neuron()
        self.pwconv1, self.bn1 = SpikeConv2d(dim, hidden, 1, bias=False, levels=levels), nn.BatchNorm2d(hidden)
        self.neuron2 = neuron()
        self.dwconv = SpikeConv2d(hidden, hidden, kernel, padding=padding, groups=hidden, bias=False, levels=levels)
        self.pwconv2, self.bn2 = nn.Conv2d(hidden, dim, 1, bias=False), nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = norm_neuron(self.neuron1(x), self.bn1, self.neuron2, pre=(self.pwconv1,), memory=self.backward_memory)
        return norm_then(s, self.bn2, pre=(self.dwconv, self.pwconv2), memory=self.backward_memory)


class BNAndPad(nn.Module):
    """A batch norm whose output gets a one-pixel border holding, per channel, what the norm gives a zero input
    with its running statistics (``bias - mean * weight / sqrt(var + eps)``, weight and bias detached), in
    training too: a following unpadded 3x3 then sees the border an un-normalised zero padding would give."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)  # first: in training it updates the running statistics the border then reads
        bn = self.bn
        border = bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        padded = F.pad(y, (1, 1, 1, 1))
        inside = torch.zeros(padded.shape[-2:], dtype=torch.bool, device=y.device)
        inside[1:-1, 1:-1] = True
        return torch.where(inside, padded, border.view(1, -1, 1, 1).to(padded.dtype))


class RepConv(nn.Module):
    """``body``: a 1x1 convolution on spikes, ``BNAndPad``, then a depthwise 3x3 without padding, a 1x1 and a
    batch norm (the grid keeps its size). Applied frame-wise to ``[T*B, C, H, W]``."""

    def __init__(self, in_ch: int, out_ch: int, levels: int):
        super().__init__()
        self.body = nn.Sequential(
            SpikeConv2d(in_ch, in_ch, 1, bias=False, levels=levels),
            BNAndPad(in_ch),
            nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, groups=in_ch, bias=False), nn.Conv2d(in_ch, out_ch, 1, bias=False),
                          nn.BatchNorm2d(out_ch)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _rep_conv_bn(dim: int, levels: int) -> nn.Sequential:
    """The original's ``RepConv`` followed by a second batch norm of its own."""
    return nn.Sequential(RepConv(dim, dim, levels), nn.BatchNorm2d(dim))


def _fold(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer`` on ``[T, B, ...]`` with time folded into the batch."""
    y = layer(x.flatten(0, 1))
    return y.reshape(*x.shape[:2], *y.shape[1:])


@register_notrace_module  # torch.fx records it as one call: it splits the heads by its input's shape
@holds_backward_memory
class RepConvAttention(nn.Module):
    """Spike-driven self-attention with re-parameterisable projections: spikes q, k, v of the neuron-fired
    input, ``(q (kᵀ v)) 0.125`` per head without softmax, the attention neuron (its own threshold), and a
    ``RepConv`` projection with no neuron after it."""

    def __init__(self, dim: int, num_heads: int, neuron: NeuronFactory, attn_neuron: NeuronFactory, levels: int,
                 attn_levels: int):
        super().__init__()
        self.num_heads, self.levels = num_heads, levels
        self.head_neuron = neuron()
        self.q_conv, self.k_conv, self.v_conv = (_rep_conv_bn(dim, levels) for _ in range(3))
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = attn_neuron()
        self.proj_conv = _rep_conv_bn(dim, attn_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.head_neuron(x)
        q, k, v = (split_heads(norm_neuron(_fold(conv[0], s), conv[1], getattr(self, f"{name}_neuron"),
                                           memory=self.backward_memory), self.num_heads)
                   for name, conv in (("q", self.q_conv), ("k", self.k_conv), ("v", self.v_conv)))
        y = spike_attention(q, k, v, _SCALE, "q_kv", self.levels, self.backward_memory)
        y = self.attn_neuron(merge_heads(y)).reshape(x.shape)
        return _fold(self.proj_conv, y)

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models, counted dense: ``M = kᵀ v`` (products
        of spikes: an AND of binary ones, a small integer product of multi-level ones, and their sums over N),
        ``q M`` (a binary spike selects what is added; a multi-level one multiplies) and the 0.125 scale."""
        t, b, c, h, w = inputs[0].shape
        n, d = h * w, c // self.num_heads
        groups = t * b * self.num_heads
        ops = {"and" if self.levels == 1 else "mul": groups * d * d * n,
               "add": groups * (d * d * (n - 1) + n * d * (d - 1))}
        ops["mul"] = ops.get("mul", 0) + groups * (n * d + (n * d * d if self.levels != 1 else 0))
        return ops


class Block(nn.Module):
    """``x + attention(x)``, then ``+ MLP(x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, neuron: NeuronFactory, attn_neuron: NeuronFactory,
                 levels: int, attn_levels: int):
        super().__init__()
        self.attn = RepConvAttention(dim, num_heads, neuron, attn_neuron, levels, attn_levels)
        self.mlp = MLP(dim, dim * mlp_ratio, neuron, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the two residual additions."""
        return {"add": 2 * output.numel()}


# ------------------------------------------------------------------ the model


class _Stage:
    """Stage ``i`` of the four: its modules in order, called one after the other (not a module: they are
    registered under the original's names)."""

    def __init__(self, modules: Sequence[nn.Module]):
        self.modules = list(modules)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.modules:
            x = module(x)
        return x


class MetaSpikeFormer(SpikingModel):
    """Meta-SpikeFormer (SDT-V2).

    Args (timm's names where timm has one):
        img_size, in_chans, num_classes: the input and classes (224 px, 1000 classes in the original).
        embed_dims: the four stages' widths ``[e0, e1, e2, e3]``; the first down-sampling gives ``e0 / 2``.
        num_heads: attention heads in stages 3 and 4; mlp_ratio: the integer hidden-width factor of every MLP
            and convolutional block (4 in the original, which hard-codes it in the convolutional blocks).
        depths: transformer blocks in stages 3 and 4 (``[6, 2]``); the convolutional stages are 1 + 1 and 2.
        time_steps: T, the steps the image is repeated over (1 in the original; 4 to fine-tune).
        kd: a second head (``head_kd``) for distillation: in training the model returns both heads' logits,
            in evaluation their mean.
        neuron, attn_neuron, attn_v_threshold (0.5), tet: see ``SpikingModel``.

    ``forward_features``: the residual stream after stage 4, ``[T, B, e3, H/16, W/16]``; the stages of
    ``forward_intermediates`` / ``features_only`` are the four stages.
    """

    architecture = "sdt_v2"
    family: ClassVar[str] = "metaspikformer_8_512"  # the entry point named in messages
    block_names: ClassVar[tuple] = ("block3", "block4")

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (128, 256, 512, 640), num_heads: int = 8, mlp_ratio: int = 4,
                 depths: Sequence[int] = (6, 2), time_steps: int = 1, kd: bool = False, neuron: NeuronArg = None,
                 attn_neuron: NeuronArg = None, attn_v_threshold: float = 0.5, tet: bool = False,
                 **neuron_settings: Any):
        super().__init__()
        settings = SDT_V2.resolve(self.family, dict(embed_dims=list(embed_dims), num_heads=num_heads,
                                                    mlp_ratio=mlp_ratio, depths=list(depths), kd=kd,
                                                    attn_v_threshold=attn_v_threshold))
        neuron_factory, attn_factory = self.set_up(
            dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, time_steps=time_steps, tet=tet,
                 **settings), neuron, attn_neuron, settings["attn_v_threshold"], neuron_settings)
        self.build(settings, neuron_factory, attn_factory)
        self.kd = settings["kd"]
        if self.kd:
            self.head_kd = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
            # a distillation fine-tune starts from a T = 1 run's weights, which have no head_kd (the original's
            # --finetune loads them leniently; here only this head may be missing, and keeps its initialisation)
            self.fresh_heads = ("head_kd",)
        self.apply(_init_weights)

    # -------------------------------------------------------------- structure
    def sep_conv(self, dim: int, neuron: NeuronFactory, levels: int) -> nn.Module:
        return SepConv(dim, neuron, levels)

    def block(self, dim: int, settings: Mapping[str, Any], neuron: NeuronFactory, attn_neuron: NeuronFactory,
              levels: int, attn_levels: int) -> nn.Module:
        return Block(dim, settings["num_heads"], settings["mlp_ratio"], neuron, attn_neuron, levels, attn_levels)

    def build(self, settings: Mapping[str, Any], neuron: NeuronFactory, attn_neuron: NeuronFactory) -> None:
        """The original's modules, under its names, and the four stages they make."""
        e, ratio, levels = settings["embed_dims"], settings["mlp_ratio"], self.spike_levels
        attn_levels = attn_neuron().output_levels()

        def conv_blocks(dim: int) -> nn.ModuleList:
            return nn.ModuleList([ConvBlock(dim, ratio, lambda c: self.sep_conv(c, neuron, levels), neuron, levels)])

        def blocks(dim: int, depth: int) -> nn.ModuleList:
            return nn.ModuleList([self.block(dim, settings, neuron, attn_neuron, levels, attn_levels)
                                  for _ in range(depth)])

        self.downsample1_1 = DownSampling(self.in_chans, e[0] // 2, 7, 2, 3, None, levels)
        self.ConvBlock1_1 = conv_blocks(e[0] // 2)
        self.downsample1_2 = DownSampling(e[0] // 2, e[0], 3, 2, 1, neuron, levels)
        self.ConvBlock1_2 = conv_blocks(e[0])
        self.downsample2 = DownSampling(e[0], e[1], 3, 2, 1, neuron, levels)
        self.ConvBlock2_1, self.ConvBlock2_2 = conv_blocks(e[1]), conv_blocks(e[1])
        self.downsample3 = DownSampling(e[1], e[2], 3, 2, 1, neuron, levels)
        self.block3 = blocks(e[2], settings["depths"][0])
        self.downsample4 = DownSampling(e[2], e[3], 3, 1, 1, neuron, levels)
        self.block4 = blocks(e[3], settings["depths"][1])
        self.neuron = neuron()  # on the pooled features, before the head
        self.num_features = self.head_hidden_size = e[3]
        self.head = nn.Linear(e[3], self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=c, reduction=r, module=m) for c, r, m in (
            (e[0], 4, "ConvBlock1_2"), (e[1], 8, "ConvBlock2_2"), (e[2], 16, "block3"), (e[3], 16, "block4"))]
        self.kept_stages = 4

    def stages(self) -> list:
        """The four stages: down-sampling and convolutional blocks to 1/4 and 1/8, then down-sampling and
        transformer blocks at 1/16 (the last down-sampling has stride 1)."""
        all_stages = [
            _Stage([self.downsample1_1, *self.ConvBlock1_1, self.downsample1_2, *self.ConvBlock1_2]),
            _Stage([self.downsample2, *self.ConvBlock2_1, *self.ConvBlock2_2]),
            _Stage([self.downsample3, *self.block3]),
            _Stage([self.downsample4, *self.block4]),
        ]
        return all_stages[:self.kept_stages]

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // 16), -(-width // 16)  # each stride-2 convolution halves a side rounding up

    def feature_map(self, x: torch.Tensor, grid: tuple[int, int], output_fmt: str = "NCHW") -> torch.Tensor:
        x = x.mean(0)  # every stage's output is [T, B, C, H', W'] already
        return x.permute(0, 2, 3, 1) if output_fmt == "NHWC" else x

    def prune_intermediate_layers(self, indices: Optional[Union[int, Sequence[int]]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take, last = feature_take_indices(4, indices)
        self.kept_stages = last + 1
        if prune_head:
            self.reset_classifier(0, "")
        return take

    # -------------------------------------------------------------- head
    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input: the neuron on the features' mean over the grid, ``[T, B, C]``."""
        return self.neuron(x.flatten(3).mean(3))

    def classify(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The head neuron on the mean over the grid, the classifier at every step, then the mean over the steps
        (kept with ``tet``); with ``kd``, the distillation head beside it: both logits in training, their
        mean in evaluation. ``pre_logits``: the head neuron's output averaged over the steps."""
        s = self.head_input(x)
        if pre_logits:
            return s if self.tet else s.mean(0)
        logits = self.head(s)
        logits = logits if self.tet else logits.mean(0)
        if not getattr(self, "kd", False):
            return logits
        distilled = self.head_kd(s)
        distilled = distilled if self.tet else distilled.mean(0)
        return (logits, distilled) if self.training else (logits + distilled) / 2

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        if getattr(self, "kd", False):
            self.head_kd = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()


def _init_weights(m: nn.Module) -> None:
    """The original's: every ``nn.Linear`` (the heads) from a truncated normal, std 0.02, bias 0; convolutions and
    batch norms keep PyTorch's defaults."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def check_stage_widths(values: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with the widths of a Meta-SpikeFormer-shaped model, or None."""
    e, heads, depths = values["embed_dims"], values["num_heads"], values["depths"]
    if len(e) != 4:
        return f"embed_dims must give 4 stage widths, got {len(e)} ({e})"
    if min(e) < 2 or e[0] % 2:
        return f"embed_dims must be positive with an even first width (the first layer makes e0 / 2), got {e}"
    for stage, width in ((3, e[2]), (4, e[3])):
        if width % heads:
            return f"stage {stage}'s width {width} is not divisible by num_heads {heads}"
    if len(depths) != 2 or min(depths) < 0:
        return f"depths must give the transformer blocks of stages 3 and 4 (two integers >= 0), got {depths}"
    return None


# ------------------------------------------------------------------ the original code's checkpoints


def _is_v2(state_dict: Mapping) -> bool:
    """SDT-V2's weights: a RepConv (its BN-and-pad layer) in the first transformer block's q."""
    return "block3.0.attn.q_conv.0.body.1.bn.weight" in state_dict or (
        "downsample1_1.encode_conv.weight" in state_dict and "ConvBlock1_1.0.Conv.bn1.weight" in state_dict)


_IMAGENET = {"img_size": 224, "num_classes": 1000}
SIZES = {
    "metaspikformer_8_384": {**_IMAGENET, "embed_dims": [96, 192, 384, 480]},
    "metaspikformer_8_512": {**_IMAGENET, "embed_dims": [128, 256, 512, 640]},
    "metaspikformer_8_768": {**_IMAGENET, "embed_dims": [192, 384, 768, 960]},
}

SDT_V2 = register_architecture(Architecture(
    name="sdt_v2",
    title="SDT-V2, Meta-SpikeFormer (Yao et al., ICLR 2024)",
    reference="BICLab/Spike-Driven-Transformer-V2",
    settings={
        "embed_dims": Param([128, 256, 512, 640], "the four stages' widths (the first layer makes e0 / 2)", kind=list),
        "num_heads": Param(8, "attention heads of stages 3 and 4", kind=int, check=at_least(1)),
        "mlp_ratio": Param(4, "hidden width / width of every MLP and convolutional block (an integer)", kind=int,
                           check=at_least(1)),
        "depths": Param([6, 2], "transformer blocks in stages 3 and 4", kind=list),
        "kd": Param(False, "a distillation head (head_kd) beside the head; training it needs a teacher", kind=bool),
        "attn_v_threshold": Param(0.5, "threshold of the neuron after the attention's products", check=positive),
    },
    sizes=SIZES,
    check=check_stage_widths,
    # main_finetune.py's checkpoints hold the model's own state dict: no renames, no dead weights
    original_args=("time_steps", "kd", "nb_classes"),
    matches=_is_v2,
    label=lambda s: "-".join(map(str, s["embed_dims"])),
    feature_stages=4,
))


def _cfg(**kwargs) -> dict:
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (14, 14), "crop_pct": 0.875,
            "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "downsample1_1.encode_conv", "classifier": "head", **kwargs}


default_cfgs = generate_default_cfgs({f"{name}.untrained": _cfg() for name in SIZES})


@register_model
def metaspikformer_8_384(pretrained: bool = False, **kwargs) -> MetaSpikeFormer:
    """Meta-SpikeFormer 31.3 M: widths 96-192-384-480, 8 heads, 224 px, T = 1 (``time_steps`` to change it).

    ``pretrained=True`` loads the weights named by ``pretrained_cfg_overlay=dict(file=...)`` (an exported
    model.safetensors) or by an exported folder given as ``timm.create_model("local-dir:FOLDER")``.
    """
    return build_entry_point(MetaSpikeFormer, "metaspikformer_8_384", pretrained, **kwargs)


@register_model
def metaspikformer_8_512(pretrained: bool = False, **kwargs) -> MetaSpikeFormer:
    """Meta-SpikeFormer 55.4 M: widths 128-256-512-640, 8 heads, 224 px, T = 1."""
    return build_entry_point(MetaSpikeFormer, "metaspikformer_8_512", pretrained, **kwargs)


@register_model
def metaspikformer_8_768(pretrained: bool = False, **kwargs) -> MetaSpikeFormer:
    """Meta-SpikeFormer 123.7 M: widths 192-384-768-960, 8 heads, 224 px, T = 1."""
    return build_entry_point(MetaSpikeFormer, "metaspikformer_8_768", pretrained, **kwargs)
