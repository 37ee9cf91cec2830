"""Spike-driven Transformer (SDT) for small images, with a pluggable spiking neuron.

Tensors inside the network are ``[T, B, C, H, W]``. Convolutions and batch
norms run on ``[T*B, C, H, W]`` (batch-norm statistics are shared over time);
neurons run over the leading T axis. The residual stream stays real-valued;
every convolution except the first sees spikes (binary, or the multi-level
spikes k / levels of a neuron such as ``multispike``).

Module names follow the original implementation's state-dict layout so that
its checkpoints load strictly (see ``spikedriven.engine.checkpoint``).
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..errors import ConfigError
from ..neurons import NeuronSpec, create_neuron, neuron_class, resolve_spec
from .sdt_blocks import Block, NeuronFactory, SpikingPatchSplit

__all__ = ["RENAMED_ARGS", "SpikeDrivenTransformer", "renamed_args", "sdt"]

# Arguments under the names that checkpoints and exports written by earlier versions record.
RENAMED_ARGS = {"T": "time_steps"}


def renamed_args(args: Mapping[str, Any]) -> dict:
    """``args`` with earlier versions' argument names replaced by today's."""
    return {RENAMED_ARGS.get(key, key): value for key, value in args.items()}


NeuronArg = Union[NeuronSpec, Mapping[str, Any], str, NeuronFactory, None]


class SpikeDrivenTransformer(nn.Module):
    """Spike-driven Transformer.

    Args (timm's names where timm has one):
        img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio: sizes.
        time_steps: T, the time steps a 4-D image is repeated over (a 5-D ``[B, T, C, H, W]`` input brings its own).
        pooling_stat: four "0"/"1" flags, max-pool after each SPS stage.
        neuron: the neuron of every layer, as timm passes ``act_layer``: a ``NeuronSpec``, a
            mapping such as ``{"mode": "plif", "tau": 2.0}``, a registered name, or a factory
            (a callable returning a new neuron layer). Instead, its settings may be given as
            keywords, ``spike_mode="if_soft", v_threshold=1.2`` (the study's names).
        attn_neuron: the neuron after the attention sum; by default ``neuron`` with
            ``attn_v_threshold`` (0.5 in the study, in every mode) as its threshold.
        tet: return per-step logits ``[T, B, K]`` for the TET loss instead of their mean.
        dvs_mode: the original's attention for event data (see ``SpikeDrivenSelfAttention``).
    """

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
        **neuron_settings: Any,
    ):
        super().__init__()
        _check_sizes(img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, time_steps, pooling_stat)
        neuron_factory, attn_factory = self._neuron_factories(neuron, attn_neuron, attn_v_threshold, neuron_settings)
        self.spike_levels = neuron_factory().output_levels()  # what the spike-fed layers see
        self.model_args = dict(
            img_size=img_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, time_steps=time_steps, pooling_stat=pooling_stat, attn_v_threshold=attn_v_threshold,
            tet=tet, dvs_mode=dvs_mode, neuron=self.neuron_spec.to_dict() if self.neuron_spec is not None else None,
        )
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.embed_dim = self.num_features = embed_dim
        self.time_steps, self.tet = time_steps, tet

        levels = self.spike_levels
        self.patch_embed = SpikingPatchSplit(in_chans, embed_dim, pooling_stat, neuron_factory, levels)
        self.block = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, neuron_factory, attn_factory, levels, dvs_mode) for _ in range(depth)]
        )
        self.head_neuron = neuron_factory()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def _neuron_factories(self, neuron, attn_neuron, attn_v_threshold, settings) -> tuple[NeuronFactory, NeuronFactory]:
        """Factories for the neuron layers; sets ``neuron_spec`` / ``attn_neuron_spec`` (None for a factory)."""
        if neuron is not None and settings:
            raise ConfigError(f"give the neuron either as neuron= or by its settings, not both (got neuron and "
                              f"{', '.join(settings)})")
        if neuron is None:  # the study's keywords; None means the neuron's own default
            settings = {k: v for k, v in settings.items() if v is not None}
            neuron = NeuronSpec(settings.pop("spike_mode", "lif"), **settings)
        if callable(neuron) and not isinstance(neuron, (NeuronSpec, str)):
            self.neuron_spec = self.attn_neuron_spec = None
            attn = attn_neuron if attn_neuron is not None else neuron
            if not callable(attn):
                raise ConfigError("with a neuron factory, attn_neuron must be a factory too")
            return neuron, attn
        self.neuron_spec = resolve_spec(neuron)
        if attn_neuron is None:
            # the neuron after the attention sum keeps its own threshold, in every mode that has one
            takes_threshold = "v_threshold" in neuron_class(self.neuron_spec.mode).settings()
            attn_neuron = self.neuron_spec.replace(v_threshold=attn_v_threshold) if takes_threshold else self.neuron_spec
        self.attn_neuron_spec = resolve_spec(attn_neuron)
        return (lambda: create_neuron(self.neuron_spec)), (lambda: create_neuron(self.attn_neuron_spec))

    # -- timm model interface
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = self.model_args["num_classes"] = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def to_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> repeated ``[T, B, C, H, W]``; ``[B, T, C, H, W]`` -> ``[T, B, C, H, W]``."""
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(self.time_steps, *x.shape)
        elif x.dim() == 5:
            x = x.transpose(0, 1)
        else:
            raise ValueError(f"expected input [B, C, H, W] or [B, T, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[-3] != self.in_chans:  # any size: the network is convolutional (ImageNet evaluates at 288)
            raise ValueError(f"expected {self.in_chans}-channel input, got {'x'.join(map(str, x.shape[-3:]))}")
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> token features ``[T, B, D, H', W']`` (real-valued residual stream)."""
        x = self.patch_embed(self.to_time_major(x))
        for blk in self.block:
            x = blk(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_neuron(x.flatten(3).mean(3))  # [T, B, D] spikes
        if pre_logits:
            return x
        logits = self.head(x)  # per time step
        return logits if self.tet else logits.mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_sizes(img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, time_steps, pooling_stat):
    def positive_int(name, value, minimum=1):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")

    for name, value in (("img_size", img_size), ("in_chans", in_chans), ("depth", depth), ("num_heads", num_heads),
                        ("time_steps", time_steps)):
        positive_int(name, value)
    positive_int("num_classes", num_classes, minimum=0)
    positive_int("embed_dim", embed_dim, minimum=8)
    if embed_dim % 8:
        raise ConfigError(f"embed_dim must be divisible by 8 (SPS widths D/8, D/4, D/2), got {embed_dim}")
    if embed_dim % num_heads:
        raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if not isinstance(mlp_ratio, (int, float)) or isinstance(mlp_ratio, bool) or int(embed_dim * mlp_ratio) < 1:
        raise ConfigError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    if not isinstance(pooling_stat, str) or len(pooling_stat) != 4 or set(pooling_stat) - {"0", "1"}:
        raise ConfigError(f"pooling_stat must be four characters of 0/1 such as '0011', got {pooling_stat!r}")


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _cfg(**kwargs):
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
        "first_conv": "patch_embed.proj_conv",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"sdt.untrained": _cfg()})


_WEIGHT_SOURCES = ("file", "state_dict", "url", "hf_hub_id")


def _weights_overlay(kwargs: Mapping[str, Any]) -> dict:
    """The pretrained_cfg overlay for ``pretrained=True``: weights must be named, as none are published.

    A bare ``file=`` (an export's model.safetensors) says nothing of the classes and channels it was
    trained for; timm would compare the default cfg's 10 classes and 3 channels against the model and
    silently drop a head that does not match. The model asked for is what the file holds, so the cfg
    takes its sizes from it, and a file that does not fit fails the strict load instead.
    """
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    given = kwargs.get("pretrained_cfg")
    given = given.to_dict() if hasattr(given, "to_dict") else given if isinstance(given, Mapping) else {}
    named = {**given, **overlay}
    if not any(named.get(key) for key in _WEIGHT_SOURCES):
        raise ConfigError(
            "no pretrained sdt weights are published; pass pretrained_cfg_overlay=dict(file=...) with an "
            "exported model.safetensors, create 'local-dir:FOLDER' from a `spikedriven export` folder, or load a checkpoint"
        )
    if named.get("source") != "local-dir":  # an exported config.json states its own sizes
        if "num_classes" in kwargs:
            overlay.setdefault("num_classes", kwargs["num_classes"])
        if "in_chans" in kwargs or "img_size" in kwargs:
            size = kwargs.get("img_size", 32)
            overlay.setdefault("input_size", (kwargs.get("in_chans", 3), size, size))
    return overlay


@register_model
def sdt(pretrained: bool = False, **kwargs) -> SpikeDrivenTransformer:
    """The study's SDT; defaults are the CIFAR 2-256 configuration with T = 4.

    ``pretrained=True`` loads the weights named by ``pretrained_cfg_overlay=dict(file=...)`` (an exported
    model.safetensors) or by an exported folder given as ``timm.create_model("local-dir:FOLDER")``.
    """
    kwargs = renamed_args(kwargs)
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = _weights_overlay(kwargs)
    return build_model_with_cfg(SpikeDrivenTransformer, "sdt", pretrained, **kwargs)
