"""Spike-driven Transformer (SDT) for small images, with a pluggable spiking neuron.

Tensors inside the network are ``[T, B, C, H, W]``. Convolutions and batch
norms run on ``[T*B, C, H, W]`` (batch-norm statistics are shared over time);
neurons run over the leading T axis. The residual stream stays real-valued;
every convolution except the first sees spikes (binary, or the multi-level
spikes k / levels of a neuron such as ``multispike``).

Module names follow the original implementation's state-dict layout so that
its checkpoints load strictly (see ``spikedriven.checkpoint``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import torch
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..errors import ConfigError
from ..neurons import NeuronSpec, SpikingNeuron, create_neuron, neuron_class, resolve_spec
from ..spike_ops import SpikeConv2d, SpikeMaxPool2d, norm_then, per_step, spike_mul

__all__ = ["SpikeDrivenTransformer", "sdt"]

NeuronFactory = Callable[[], SpikingNeuron]


# Layers fed by spikes keep their input for backward as bool, and a conv -> batch
# norm (-> neuron) chain goes through norm_then, which chooses what backward keeps
# and what it recomputes (spikedriven.spike_ops).


def _pool(enabled: bool, levels: int = 0) -> nn.Module:
    """A 3x3 / 2 max-pool; ``levels``: the levels of the spikes it sees (0: real values)."""
    if not enabled:
        return nn.Identity()
    if not levels:
        return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return SpikeMaxPool2d(kernel_size=3, stride=2, padding=1, levels=levels)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, bias: bool, levels: int = 0) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A convolution and its batch norm; ``levels``: the levels of the spikes it sees (0: real values)."""
    if levels:
        conv = SpikeConv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias, levels=levels)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)
    return conv, nn.BatchNorm2d(out_ch)


class SpikingPatchSplit(nn.Module):
    """SPS: four conv-BN stages from image to ``embed_dim`` channels, then a
    spiking relative-position conv added to the features."""

    def __init__(self, in_chans: int, embed_dim: int, pooling_stat: str, neuron: NeuronFactory, levels: int = 1):
        super().__init__()
        d = embed_dim
        pool = [flag == "1" for flag in pooling_stat]
        self.proj_conv, self.proj_bn = _conv_bn(in_chans, d // 8, 3, bias=False)  # sees the image
        self.proj_neuron, self.maxpool = neuron(), _pool(pool[0], levels)
        self.proj_conv1, self.proj_bn1 = _conv_bn(d // 8, d // 4, 3, bias=False, levels=levels)
        self.proj_neuron1, self.maxpool1 = neuron(), _pool(pool[1], levels)
        self.proj_conv2, self.proj_bn2 = _conv_bn(d // 4, d // 2, 3, bias=False, levels=levels)
        self.proj_neuron2, self.maxpool2 = neuron(), _pool(pool[2], levels)
        self.proj_conv3, self.proj_bn3 = _conv_bn(d // 2, d, 3, bias=False, levels=levels)
        self.maxpool3 = _pool(pool[3])  # acts on the real-valued BN output
        self.rpe_neuron = neuron()
        self.rpe_conv, self.rpe_bn = _conv_bn(d, d, 3, bias=False, levels=levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_neuron(x, pre=(self.proj_conv,), norm=self.proj_bn)
        x = self.proj_neuron1(x, pre=(self.maxpool, self.proj_conv1), norm=self.proj_bn1)
        x = self.proj_neuron2(x, pre=(self.maxpool1, self.proj_conv2), norm=self.proj_bn2)
        feat = norm_then(x, self.proj_bn3, lambda y: per_step(self.maxpool3, y), pre=(self.maxpool2, self.proj_conv3))
        return norm_then(self.rpe_neuron(feat), self.rpe_bn, pre=(self.rpe_conv,)) + feat

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the position code's residual."""
        return {"add": output.numel()}


class SpikeDrivenSelfAttention(nn.Module):
    """SDSA: ``q * SN(sum_tokens(k * v))`` with binary q, k, v; no softmax, no scale.

    The product is channel-wise, so heads only group channels: channel
    ``c = head * (dim / heads) + d`` as in the reference.

    ``dvs_mode`` (the original's attention for event data): a 3x3 max-pool,
    stride 1, on k and v over each frame, and on k * v and on q * kv in the
    original's head layout, where the window spans tokens and the channels of a
    head. Here the head layout is ``[heads, dim/heads, N]`` (the original's
    transposed); a max-pool's window is symmetric, so the result is the same.
    """

    def __init__(self, dim: int, num_heads: int, neuron: NeuronFactory, attn_neuron: NeuronFactory, levels: int = 1,
                 dvs_mode: bool = False):
        super().__init__()
        self.num_heads, self.levels, self.dvs_mode = num_heads, levels, dvs_mode
        if dvs_mode:  # no parameters: the original's checkpoints have no keys for them either
            self.frame_pool = SpikeMaxPool2d(kernel_size=3, stride=1, padding=1, levels=levels)
            self.head_pool = SpikeMaxPool2d(kernel_size=3, stride=1, padding=1, levels=levels * levels)
        self.shortcut_neuron = neuron()
        self.q_conv, self.q_bn = _conv_bn(dim, dim, 1, bias=False, levels=levels)
        self.k_conv, self.k_bn = _conv_bn(dim, dim, 1, bias=False, levels=levels)
        self.v_conv, self.v_bn = _conv_bn(dim, dim, 1, bias=False, levels=levels)
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.kv_neuron = attn_neuron()
        # q * kv multiplies spikes of `levels` levels each: the output convolution sees levels**2 levels
        self.proj_conv, self.proj_bn = _conv_bn(dim, dim, 1, bias=True, levels=levels * levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, c, h, w = x.shape
        s = self.shortcut_neuron(x)
        # [T, B, heads, dim/heads, N]: a view of [T, B, C, H, W], no copy
        heads = (t, b, self.num_heads, c // self.num_heads, h * w)
        q = self.q_neuron(s, pre=(self.q_conv,), norm=self.q_bn).reshape(heads)
        k = self.k_neuron(s, pre=(self.k_conv,), norm=self.k_bn)
        v = self.v_neuron(s, pre=(self.v_conv,), norm=self.v_bn)
        if self.dvs_mode:
            k, v = per_step(self.frame_pool, k), per_step(self.frame_pool, v)
        kv = spike_mul(k.reshape(heads), v.reshape(heads), self.levels)
        if self.dvs_mode:
            kv = self._pool_heads(kv)
        kv = self.kv_neuron(kv.sum(dim=-1, keepdim=True))  # sum over tokens
        y = spike_mul(q, kv, self.levels)
        if self.dvs_mode:
            y = self._pool_heads(y)
        return norm_then(y.reshape(t, b, c, h, w), self.proj_bn, pre=(self.proj_conv,)) + x

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the masks k * v and q * kv
        (an AND of binary spikes, a small integer product of multi-level ones), the sum over the N
        tokens (N - 1 adds per channel) and the residual."""
        t, b, c, h, w = inputs[0].shape
        elements = t * b * c * h * w
        return {"and" if self.levels == 1 else "mul": 2 * elements, "add": t * b * c * (h * w - 1) + elements}

    def _pool_heads(self, z: torch.Tensor) -> torch.Tensor:
        """The 3x3 max-pool over (head channels, tokens) of ``[T, B, heads, dim/heads, N]``."""
        return self.head_pool(z.reshape(-1, 1, *z.shape[-2:])).reshape(z.shape)


class SpikingMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, neuron: NeuronFactory, levels: int = 1):
        super().__init__()
        self.fc1_neuron = neuron()
        self.fc1_conv, self.fc1_bn = _conv_bn(dim, hidden, 1, bias=True, levels=levels)
        self.fc2_neuron = neuron()
        self.fc2_conv, self.fc2_bn = _conv_bn(hidden, dim, 1, bias=True, levels=levels)
        self.hidden_residual = hidden == dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        s = self.fc1_neuron(x)
        if self.hidden_residual:
            identity = norm_then(s, self.fc1_bn, pre=(self.fc1_conv,)) + identity
            s = self.fc2_neuron(identity)
        else:
            s = self.fc2_neuron(s, pre=(self.fc1_conv,), norm=self.fc1_bn)
        return norm_then(s, self.fc2_bn, pre=(self.fc2_conv,)) + identity

    def inference_ops(self, inputs, output: torch.Tensor) -> dict:
        """Operations outside the layers and neurons, for energy models: the residual additions."""
        return {"add": output.numel() * (2 if self.hidden_residual else 1)}


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, neuron: NeuronFactory, attn_neuron: NeuronFactory,
                 levels: int = 1, dvs_mode: bool = False):
        super().__init__()
        self.attn = SpikeDrivenSelfAttention(dim, num_heads, neuron, attn_neuron, levels, dvs_mode)
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), neuron, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))  # each adds its own residual


NeuronArg = Union[NeuronSpec, Mapping[str, Any], str, NeuronFactory, None]


class SpikeDrivenTransformer(nn.Module):
    """Spike-driven Transformer.

    Args (timm's names where timm has one):
        img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio: sizes.
        T: time steps a 4-D image is repeated over (a 5-D ``[B, T, C, H, W]`` input brings its own).
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
        T: int = 4,
        pooling_stat: str = "0011",
        neuron: NeuronArg = None,
        attn_neuron: NeuronArg = None,
        attn_v_threshold: float = 0.5,
        tet: bool = False,
        dvs_mode: bool = False,
        **neuron_settings: Any,
    ):
        super().__init__()
        _check_sizes(img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, T, pooling_stat)
        neuron_factory, attn_factory = self._neuron_factories(neuron, attn_neuron, attn_v_threshold, neuron_settings)
        self.spike_levels = neuron_factory().output_levels()  # what the spike-fed layers see
        self.model_args = dict(
            img_size=img_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, T=T, pooling_stat=pooling_stat, attn_v_threshold=attn_v_threshold,
            tet=tet, dvs_mode=dvs_mode, neuron=self.neuron_spec.to_dict() if self.neuron_spec is not None else None,
        )
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.embed_dim = self.num_features = embed_dim
        self.T, self.tet = T, tet

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
            x = x.unsqueeze(0).expand(self.T, *x.shape)
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


def _check_sizes(img_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, T, pooling_stat):
    def positive_int(name, value, minimum=1):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")

    for name, value in (("img_size", img_size), ("in_chans", in_chans), ("depth", depth), ("num_heads", num_heads), ("T", T)):
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
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = _weights_overlay(kwargs)
    return build_model_with_cfg(SpikeDrivenTransformer, "sdt", pretrained, **kwargs)
