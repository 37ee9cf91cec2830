"""Spike-driven Transformer (SDT) for small images, with a pluggable spiking neuron.

Tensors inside the network are ``[T, B, C, H, W]``. Convolutions and batch
norms run on ``[T*B, C, H, W]`` (batch-norm statistics are shared over time);
neurons run over the leading T axis. The residual stream stays real-valued;
every convolution except the first sees spikes (binary, or the multi-level
spikes k / levels of a neuron such as ``multispike``).

Module names follow the original implementation's state-dict layout so that
its checkpoints load strictly (``original_state_dict`` below renames its neuron
layers and drops its dead weights).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import torch
from torch import nn
from timm.models import generate_default_cfgs, register_model

from ..errors import ConfigError, did_you_mean
from ..neurons.spec import Param
from .base import NeuronArg, SpikingModel, build_entry_point, check_patch_splitting
from .registry import Architecture, at_least, positive, register_architecture
from .sdt_blocks import LEARNABLE_GRID, RPE_MODES, Block, SpikingPatchSplit

__all__ = ["SDT", "SpikeDrivenTransformer", "sdt"]


class SpikeDrivenTransformer(SpikingModel):
    """Spike-driven Transformer.

    Args (timm's names where timm has one):
        img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio: sizes.
        time_steps: T, the time steps a 4-D image is repeated over (a 5-D ``[B, T, C, H, W]`` input brings its own).
        pooling_stat: four "0"/"1" flags, max-pool after each SPS stage.
        neuron, attn_neuron, and the neuron's settings as keywords: see ``SpikingModel``; the neuron
            after the attention sum has ``attn_v_threshold`` (0.5 in the study, in every mode) by default.
        tet: return per-step logits ``[T, B, K]`` for the TET loss instead of their mean.
        dvs_mode: the original's attention for event data (see ``SpikeDrivenSelfAttention``).
        rpe_mode: the SPS's relative position code, one of the study's variants (``sdt_blocks.RPE_MODES``).

    ``forward_features``: the real-valued residual stream ``[T, B, D, H', W']``; the stages are the SPS
    (``patch_embed``) and each block; timm's contract as ``SpikingModel`` tells.
    """

    architecture = "sdt"

    def __init__(
        self,
        img_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        embed_dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        time_steps: int = 4,
        pooling_stat: str = "0011",
        neuron: NeuronArg = None,
        attn_neuron: NeuronArg = None,
        attn_v_threshold: float = 0.5,
        tet: bool = False,
        dvs_mode: bool = False,
        rpe_mode: str = "conv",
        **neuron_settings: Any,
    ):
        super().__init__()
        settings = SDT.resolve("sdt", dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                           pooling_stat=pooling_stat, attn_v_threshold=attn_v_threshold,
                                           dvs_mode=dvs_mode, rpe_mode=rpe_mode))
        neuron_factory, attn_factory = self.set_up(
            dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, time_steps=time_steps, tet=tet, **settings),
            neuron, attn_neuron, settings["attn_v_threshold"], neuron_settings)
        embed_dim, depth, num_heads, mlp_ratio, pooling_stat, dvs_mode, rpe_mode = (settings[k] for k in (
            "embed_dim", "depth", "num_heads", "mlp_ratio", "pooling_stat", "dvs_mode", "rpe_mode"))  # read, checked
        grid = img_size
        for _ in range(pooling_stat.count("1")):  # a 3x3 / 2 max-pool with padding 1 rounds up
            grid = (grid + 1) // 2
        if rpe_mode == "learnable" and grid > LEARNABLE_GRID:
            raise ConfigError(f"rpe_mode learnable holds positions for at most {LEARNABLE_GRID} x {LEARNABLE_GRID} "
                              f"tokens, and img_size {img_size} with pooling_stat {pooling_stat} gives {grid} x {grid}")
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim

        levels = self.spike_levels
        self.patch_embed = SpikingPatchSplit(in_chans, embed_dim, pooling_stat, neuron_factory, levels, rpe_mode)
        self.block = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, neuron_factory, attn_factory, levels, dvs_mode) for _ in range(depth)]
        )
        self.head_neuron = neuron_factory()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        # each max-pool of the SPS (3x3, stride 2) halves the grid
        self.set_up_features(embed_dim, reduction=2 ** pooling_stat.count("1"))

    def classify(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean over the tokens, the head neuron over the T steps, the classifier at every step, then the
        mean over the steps (kept with ``tet``). ``pre_logits``: the head neuron's spike rate ``[B, D]``
        (its spikes ``[T, B, D]`` with ``tet``), which the classifier maps linearly to the logits' mean."""
        x = self.head_neuron(x.flatten(3).mean(3))  # [T, B, D] spikes
        if pre_logits:
            return x if self.tet else x.mean(0)
        logits = self.head(x)  # per time step
        return logits if self.tet else logits.mean(0)


def _pooling_flags(value, settings) -> Optional[str]:
    return None if len(value) == 4 and not set(value) - {"0", "1"} else "must be four 0/1 flags such as '0011'"


def _rpe_mode(value, settings) -> Optional[str]:
    return None if value in RPE_MODES else f"must be one of {', '.join(RPE_MODES)}{did_you_mean(value, RPE_MODES)}"


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------ the original code's checkpoints

# The original SDSA defines an 8x8 Conv1d ("talking heads") that forward never uses, and two neuron
# layers (SPS's rpe_lif, SDSA's attn_lif) that it never calls: with PLIF they hold a leak parameter.
_DEAD_KEYS = re.compile(r"^(block\.\d+\.attn\.talking_heads\.weight|patch_embed\.rpe_lif\..*|block\.\d+\.attn\.attn_lif\..*)$")
# The original's neuron layers under our names (their state: PLIF's leak parameter w).
ORIGINAL_NEURON_NAMES = {
    "proj_lif": "proj_neuron", "proj_lif1": "proj_neuron1", "proj_lif2": "proj_neuron2", "proj_lif3": "rpe_neuron",
    "shortcut_lif": "shortcut_neuron", "q_lif": "q_neuron", "k_lif": "k_neuron", "v_lif": "v_neuron",
    "talking_heads_lif": "kv_neuron", "fc1_lif": "fc1_neuron", "fc2_lif": "fc2_neuron", "head_lif": "head_neuron",
}
_NEURON_KEY = re.compile(r"^((?:.*\.)?)(\w+_lif\d?)(\..+)$")


def original_state_dict(state_dict: Mapping) -> dict:
    """The original code's state dict under our names: its dead weights dropped, its neuron layers renamed."""
    out = {}
    for key, value in state_dict.items():
        if _DEAD_KEYS.match(key):
            continue
        found = _NEURON_KEY.match(key)
        if found and found.group(2) in ORIGINAL_NEURON_NAMES:
            key = found.group(1) + ORIGINAL_NEURON_NAMES[found.group(2)] + found.group(3)
        out[key] = value
    return out


def _is_sdt(state_dict: Mapping) -> bool:
    """SDT's weights: its SPS position conv, 1x1 convolutions (not linears, not Conv1d) for q, k, v, no LayerNorms."""
    q = state_dict.get("block.0.attn.q_conv.weight")
    return ("patch_embed.rpe_conv.weight" in state_dict and (q is None or q.dim() == 4)
            and "block.0.attn.q_linear.weight" not in state_dict and "block.0.norm1.weight" not in state_dict)


SDT = register_architecture(Architecture(
    name="sdt",
    title="Spike-driven Transformer (SDT-V1, Yao et al., NeurIPS 2023)",
    reference="BICLab/Spike-Driven-Transformer",
    settings={
        "depth": Param(2, "transformer blocks (the study's layer)", kind=int, check=at_least(1)),
        "embed_dim": Param(256, "embedding width D (the study's dim); the SPS widths are D/8, D/4, D/2",
                           kind=int, check=at_least(8)),
        "num_heads": Param(8, "attention heads", kind=int, check=at_least(1)),
        "mlp_ratio": Param(4.0, "MLP hidden width / embed_dim", check=positive),
        "pooling_stat": Param("0011", "max-pool after each of the four SPS stages (four 0/1 flags)", kind=str,
                              check=_pooling_flags),
        "attn_v_threshold": Param(0.5, "threshold of the neuron after the attention sum", check=positive),
        "dvs_mode": Param(False, "the original's attention for event data: 3x3 max-pools on k, v, k*v and q*kv",
                          kind=bool),
        "rpe_mode": Param("conv", "the SPS's relative position code (the study's variants): "
                          + "; ".join(f"{k}: {v}" for k, v in RPE_MODES.items()), kind=str, check=_rpe_mode),
    },
    sizes={"sdt": {}},
    check=check_patch_splitting,
    original_state_dict=original_state_dict,
    # the model settings the original's pickled argparse Namespace records, under its names
    original_args=("spike_mode", "dim", "layer", "time_steps", "num_classes", "num_heads", "pooling_stat",
                   "mlp_ratio", "img_size", "TET", "rpe_mode"),
    matches=_is_sdt,
    # the study's publication, best-epoch test top-1 (SPEC section 1)
    published={
        ("torch/cifar10", "sdt 2-256", 4): {("lif", 1.0): 94.34, ("if", 0.8): 94.13, ("if", 1.0): 94.44, ("if", 1.2): 94.32,
                                            ("if_soft", 0.8): 93.88, ("if_soft", 1.0): 94.53, ("if_soft", 1.2): 94.40},
        ("torch/cifar100", "sdt 2-256", 4): {("lif", 1.0): 76.00, ("if", 0.8): 76.11, ("if", 1.0): 76.07,
                                             ("if", 1.2): 76.15, ("if_soft", 0.8): 76.00, ("if_soft", 1.0): 76.36,
                                             ("if_soft", 1.2): 76.56},
    },
))


def _cfg(**kwargs):
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
        "pool_size": (8, 8),  # the grid after the SPS's two max-pools at 32 px
        "first_conv": "patch_embed.proj_conv",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"sdt.untrained": _cfg()})


@register_model
def sdt(pretrained: bool = False, **kwargs) -> SpikeDrivenTransformer:
    """The study's SDT; defaults are the CIFAR 2-256 configuration with T = 4.

    ``pretrained=True`` loads the weights named by ``pretrained_cfg_overlay=dict(file=...)`` (an exported
    model.safetensors) or by an exported folder given as ``timm.create_model("local-dir:FOLDER")``.
    """
    return build_entry_point(SpikeDrivenTransformer, "sdt", pretrained, **kwargs)
