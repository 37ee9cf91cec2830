"""What every spiking architecture shares: the neuron passed in as a layer, the time axis, the classifier,
what a model records of its own arguments, the size check of the spiking patch splitting, and timm's model
contract (``SpikingModel``'s docstring tells how an SNN keeps it)."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from timm.layers import register_notrace_function
from timm.models._features import feature_take_indices

from ..errors import ConfigError
from ..neurons import NeuronSpec, SpikingNeuron, create_neuron, neuron_class, resolve_spec

__all__ = ["GLOBAL_POOLS", "NeuronArg", "NeuronFactory", "SpikingModel", "check_common", "check_patch_splitting",
           "time_major"]

GLOBAL_POOLS = ("avg", "")  # timm's global_pool: the mean over tokens and time steps, or no pooling
FEATURE_FORMATS = ("NCHW", "NHWC")  # forward_intermediates' output_fmt

NeuronFactory = Callable[[], SpikingNeuron]
NeuronArg = Union[NeuronSpec, Mapping[str, Any], str, NeuronFactory, None]


@register_notrace_function  # a branch on the input's rank: torch.fx records the call, not the branch
def time_major(x: torch.Tensor, time_steps: int, in_chans: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[T, B, C, H, W]`` (the image at every step); ``[B, T, C, H, W]`` -> ``[T, B, C, H, W]``."""
    if x.dim() == 4:
        x = x.unsqueeze(0).expand(time_steps, *x.shape)
    elif x.dim() == 5:
        x = x.transpose(0, 1)
    else:
        raise ValueError(f"expected input [B, C, H, W] or [B, T, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[-3] != in_chans:  # any size: the networks are convolutional (ImageNet evaluates at 288)
        raise ValueError(f"expected {in_chans}-channel input, got {'x'.join(map(str, x.shape[-3:]))}")
    return x


def _positive_int(name: str, value: Any, minimum: int = 1) -> Optional[str]:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        return f"{name} must be an integer >= {minimum}, got {value!r}"
    return None


def check_common(img_size: Any, in_chans: Any, num_classes: Any, time_steps: Any) -> None:
    """The arguments every model takes, checked with one sentence."""
    for problem in (_positive_int("img_size", img_size), _positive_int("in_chans", in_chans),
                    _positive_int("time_steps", time_steps), _positive_int("num_classes", num_classes, minimum=0)):
        if problem:
            raise ConfigError(problem)


def check_patch_splitting(values: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with the sizes of a transformer on spiking patch splitting (SPS: widths embed_dim/8, /4, /2,
    then embed_dim), heads that split embed_dim and an MLP of mlp_ratio, or None; SDT's and Spikformer's check."""
    embed_dim, num_heads = values["embed_dim"], values["num_heads"]
    if embed_dim % 8:
        return f"embed_dim must be divisible by 8 (SPS widths embed_dim/8, /4, /2), got {embed_dim}"
    if embed_dim % num_heads:
        return f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
    if int(embed_dim * values["mlp_ratio"]) < 1:
        return f"mlp_ratio {values['mlp_ratio']:g} leaves the MLP no hidden unit at embed_dim {embed_dim}"
    return None


class SpikingModel(nn.Module):
    """The base of every architecture. A subclass calls ``set_up`` first thing in its ``__init__``: it checks
    the common arguments, records every constructor argument in ``model_args`` (what a checkpoint stores),
    and returns the factories of the neuron layers, as timm passes ``act_layer``.

    ``neuron``: a ``NeuronSpec``, a mapping such as ``{"mode": "plif", "tau": 2.0}``, a registered name, or a
    factory returning a new neuron layer; or, instead, its settings as keywords (``spike_mode="if_soft",
    v_threshold=1.2``, the study's names). ``attn_neuron``: the neuron of the attention (after its sum or
    product); by default ``neuron`` with ``attn_v_threshold`` as threshold, in every mode that has one.
    ``global_pool`` (timm's keyword, taken among the keywords and not recorded in ``model_args``, as it
    changes no weight): see ``reset_classifier``.

    timm's model contract, as an SNN keeps it:

    * ``forward_features(x)``: the residual stream after the last stage, **time-major** (``[T, B, D, H', W']``,
      or tokens ``[T, B, N, D]``), not timm's ``[B, C, H, W]``: the heads need the time axis (SDT fires a
      neuron over the T steps of the pooled tokens before its classifier, and ``tet`` returns logits per
      step), so averaging it away there would change what ``forward_head`` computes.
      ``forward_head(forward_features(x))`` is ``forward(x)``, bit for bit.
    * ``forward_head(x, pre_logits=True)``: the pooled features the classifier reads, ``[B, head_hidden_size]``
      (``[T, B, ...]`` with ``tet``); ``forward`` after ``reset_classifier(0)`` returns the same.
    * ``reset_classifier(num_classes, global_pool)``: ``'avg'``, the mean over tokens and time steps, or
      ``''``, no pooling: the output is then ``forward_features`` averaged over the time steps (the rate a
      readout decodes, with no neuron after the last block) in the last stage's layout, ``[B, D, H', W']``
      or tokens ``[B, N, D]`` (per step with ``tet``). A classifier needs pooled features, so ``''`` needs
      ``num_classes=0``, as timm's own heads do.
    * ``feature_info``, ``forward_intermediates`` and ``features_only=True`` (timm's ``FeatureGetterNet``):
      a stage is the stem (the spiking patch splitting) or one block; each intermediate is a map
      ``[B, C, H', W']``, the stage's output averaged over the time steps (``stage_map``: tokens go back
      onto their grid, row by row).
    * torch.fx: the neuron layers (a Python loop over T) and the layers that branch on a tensor's shape or
      attributes are registered with timm as not traced, so timm's and torchvision's tracers record them
      as calls; a traced module computes the same numbers. A graph keeps the Python settings read outside
      those calls as they were when traced (``tet``, ``global_pool``, the memory mode of a traced
      ``norm_then`` or ``norm_neuron``, which changes what backward keeps, never a number).

    An architecture declares its stages (``stem_name``, ``blocks_name``; ``stage_map`` where a stage's output is
    not ``[T, B, C, H, W]``), calls ``set_up_features`` once its blocks are built, sets ``num_features`` and
    ``head_hidden_size`` (the width of the head's input) and defines ``classify``, its pooled head.
    """

    architecture: str = ""  # the registered family, for messages and the model card
    # the neuron when none is given (None: LIF, or the mode the neuron's keywords name)
    default_neuron: ClassVar[Optional[NeuronSpec]] = None
    # forward_features runs the stem, then every block of this ModuleList, on the time-major input
    stem_name: ClassVar[str] = "patch_embed"
    blocks_name: ClassVar[str] = "block"

    def set_up(self, model_args: dict, neuron: NeuronArg, attn_neuron: NeuronArg, attn_v_threshold: Optional[float],
               neuron_settings: Mapping[str, Any]) -> tuple[NeuronFactory, NeuronFactory]:
        check_common(model_args["img_size"], model_args["in_chans"], model_args["num_classes"], model_args["time_steps"])
        neuron_settings = dict(neuron_settings)
        # timm's create_model hands a global_pool it is given to the constructor: here, among the keywords
        self.global_pool = self._checked_pool(neuron_settings.pop("global_pool", None), model_args["num_classes"])
        factory, attn_factory = self._neuron_factories(neuron, attn_neuron, attn_v_threshold, neuron_settings)
        self.spike_levels = factory().output_levels()  # what the spike-fed layers see
        spec = self.neuron_spec.to_dict() if self.neuron_spec is not None else None
        self.model_args = {**model_args, "neuron": spec}
        self.img_size, self.in_chans = model_args["img_size"], model_args["in_chans"]
        self.num_classes, self.time_steps, self.tet = model_args["num_classes"], model_args["time_steps"], model_args["tet"]
        return factory, attn_factory

    def _neuron_factories(self, neuron, attn_neuron, attn_v_threshold, settings) -> tuple[NeuronFactory, NeuronFactory]:
        """Factories for the neuron layers; sets ``neuron_spec`` / ``attn_neuron_spec`` (None for a factory)."""
        if neuron is not None and settings:
            raise ConfigError(f"give the neuron either as neuron= or by its settings, not both (got neuron and "
                              f"{', '.join(settings)})")
        if neuron is None:  # the study's keywords; None means the neuron's own default
            settings = {k: v for k, v in settings.items() if v is not None}
            if not settings and self.default_neuron is not None:
                neuron = self.default_neuron
            else:
                neuron = NeuronSpec(settings.pop("spike_mode", "lif"), **settings)
        if callable(neuron) and not isinstance(neuron, (NeuronSpec, str)):
            self.neuron_spec = self.attn_neuron_spec = None
            attn = attn_neuron if attn_neuron is not None else neuron
            if not callable(attn):
                raise ConfigError("with a neuron factory, attn_neuron must be a factory too")
            return neuron, attn
        self.neuron_spec = resolve_spec(neuron)
        if attn_neuron is None:
            # the attention's neuron keeps its own threshold, in every mode that has one
            takes_threshold = "v_threshold" in neuron_class(self.neuron_spec.mode).settings()
            attn_neuron = (self.neuron_spec.replace(v_threshold=attn_v_threshold)
                           if takes_threshold and attn_v_threshold is not None else self.neuron_spec)
        self.attn_neuron_spec = resolve_spec(attn_neuron)
        return (lambda: create_neuron(self.neuron_spec)), (lambda: create_neuron(self.attn_neuron_spec))

    def to_time_major(self, x: torch.Tensor) -> torch.Tensor:
        return time_major(x, self.time_steps, self.in_chans)

    # -------------------------------------------------------------- forward (the contract above)
    def stages(self) -> list[nn.Module]:
        """What ``forward_features`` runs on the time-major input, in order: the stem, then each block."""
        return [getattr(self, self.stem_name), *getattr(self, self.blocks_name)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``[B, C, H, W]`` (or ``[B, T, C, H, W]``) -> the last stage's output, time-major."""
        x = self.to_time_major(x)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Time-major features -> logits ``[B, K]`` (``[T, B, K]`` with ``tet``); with ``pre_logits`` the pooled
        features the classifier reads; with ``global_pool=''`` the features averaged over time, un-pooled."""
        if not self.global_pool:
            return x if self.tet else x.mean(0)
        return self.classify(x, pre_logits)

    def classify(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The architecture's pooled head on time-major features (``forward_head`` with ``global_pool='avg'``)."""
        raise NotImplementedError(f"{type(self).__name__} defines no classify")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # defined here, in this module, so that torch.fx finds time_major among the traced code's globals
        return self.forward_head(self.forward_features(x))

    # -------------------------------------------------------------- classifier
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier for ``num_classes`` (0: none, the model returns pooled features); ``global_pool``
        ``'avg'`` or ``''`` (see the class docstring), None keeps the current one."""
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.global_pool = self._checked_pool(self.global_pool if global_pool is None else global_pool, num_classes)
        self.num_classes = self.model_args["num_classes"] = num_classes
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def _checked_pool(self, global_pool: Optional[str], num_classes: int) -> str:
        """``global_pool`` (None: ``'avg'``), refused with one sentence where it cannot be honoured."""
        global_pool = "avg" if global_pool is None else global_pool
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"{type(self).__name__} pools by averaging over tokens and time steps: global_pool "
                             f"must be 'avg' or '' (no pooling), got {global_pool!r}")
        if global_pool == "" and num_classes > 0:
            raise ValueError(f"global_pool '' leaves the features un-pooled and a classifier needs pooled ones: "
                             f"give num_classes=0 with it (got num_classes={num_classes})")
        return global_pool

    # -------------------------------------------------------------- intermediate features
    def set_up_features(self, channels: int, reduction: int) -> None:
        """``feature_info``: one entry per stage, every stage ``channels`` wide on the stem's grid (``reduction``:
        the stem's output stride). Called once the blocks are built."""
        blocks = getattr(self, self.blocks_name)
        names = [self.stem_name, *(f"{self.blocks_name}.{i}" for i in range(len(blocks)))]
        self.feature_info = [dict(num_chs=channels, reduction=reduction, module=name) for name in names]

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        """The stages' grid ``(H', W')`` for an input of ``height x width``: the stem's 3x3 / 2 max-pools
        (padding 1) each halve a side rounding up."""
        reduction = self.feature_info[0]["reduction"]
        return -(-height // reduction), -(-width // reduction)

    def stage_map(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """A stage's output as ``[T, B, C, H', W']`` (``grid``: ``(H', W')``); here it is one already."""
        return x

    def feature_map(self, x: torch.Tensor, grid: tuple[int, int], output_fmt: str = "NCHW") -> torch.Tensor:
        """A stage's output as timm's intermediate: averaged over the time steps, ``[B, C, H', W']`` (or NHWC)."""
        x = self.stage_map(x, grid).mean(0)
        return x.permute(0, 2, 3, 1) if output_fmt == "NHWC" else x

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, Sequence[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's ``forward_intermediates``: the maps of the stages ``indices`` takes (None: all; n: the last n;
        a list: those, negative from the end) and, unless ``intermediates_only``, ``forward_features``' output
        (of the last stage run, with ``stop_early``). ``norm`` is accepted for timm's callers and does nothing:
        these models end in the residual stream, with no final norm."""
        if output_fmt not in FEATURE_FORMATS:
            raise ValueError(f"output_fmt must be one of {', '.join(FEATURE_FORMATS)}, got {output_fmt!r}")
        stages = self.stages()
        take, last = feature_take_indices(len(stages), indices)
        if intermediates_only or stop_early:
            stages = stages[:last + 1]
        x = self.to_time_major(x)
        grid = self.feature_grid(*x.shape[-2:])
        intermediates = []
        for index, stage in enumerate(stages):
            x = stage(x)
            if index in take:
                intermediates.append(self.feature_map(x, grid, output_fmt))
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: Optional[Union[int, Sequence[int]]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last stage ``indices`` takes and, with ``prune_head``, the classifier and
        pooling; the stages taken, as absolute indices. There is no final norm to prune."""
        take, last = feature_take_indices(len(self.stages()), indices)
        blocks = getattr(self, self.blocks_name)
        setattr(self, self.blocks_name, blocks[:last])  # stage 0 is the stem, stage i block i - 1
        if prune_head:
            self.reset_classifier(0, "")
        return take


# Arguments under the names that checkpoints and exports written by earlier versions record.
RENAMED_ARGS = {"T": "time_steps"}


def renamed_args(args: Mapping[str, Any]) -> dict:
    """``args`` with earlier versions' argument names replaced by today's."""
    return {RENAMED_ARGS.get(key, key): value for key, value in args.items()}


_WEIGHT_SOURCES = ("file", "state_dict", "url", "hf_hub_id")


def _weights_overlay(variant: str, kwargs: Mapping[str, Any]) -> dict:
    """The pretrained_cfg overlay for ``pretrained=True``: weights must be named, as none are published.

    A bare ``file=`` (an export's model.safetensors) says nothing of the classes and channels it was
    trained for; timm would compare the default cfg's classes and channels against the model and
    silently drop a head that does not match. The model asked for is what the file holds, so the cfg
    takes its sizes from it, and a file that does not fit fails the strict load instead.
    """
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    given = kwargs.get("pretrained_cfg")
    given = given.to_dict() if hasattr(given, "to_dict") else given if isinstance(given, Mapping) else {}
    named = {**given, **overlay}
    if not any(named.get(key) for key in _WEIGHT_SOURCES):
        raise ConfigError(
            f"no pretrained {variant} weights are published; pass pretrained_cfg_overlay=dict(file=...) with an "
            "exported model.safetensors, create 'local-dir:FOLDER' from a `spikedriven export` folder, or load a checkpoint"
        )
    if named.get("source") != "local-dir":  # an exported config.json states its own sizes
        if "num_classes" in kwargs:
            overlay.setdefault("num_classes", kwargs["num_classes"])
        if "in_chans" in kwargs or "img_size" in kwargs:
            size = kwargs.get("img_size", 32)
            overlay.setdefault("input_size", (kwargs.get("in_chans", 3), size, size))
    return overlay


def _feature_cfg(arch, variant: str, kwargs: Mapping[str, Any]) -> dict:
    """How ``features_only=True`` wraps a model: timm's getter, which calls ``forward_intermediates``, by default
    on every stage (the stem and each of the ``depth`` blocks, or a staged model's fixed stages; timm's own
    default, stages 0 to 4, fits only a model of five)."""
    cfg: dict[str, Any] = {"feature_cls": "getter"}
    if arch.feature_stages:
        cfg["out_indices"] = arch.feature_stages
        return cfg
    depth = kwargs.get("depth", arch.defaults(variant).get("depth"))
    if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:  # else the model refuses it
        cfg["out_indices"] = depth + 1  # the last depth + 1 stages: all of them
    return cfg


def build_entry_point(cls: type, variant: str, pretrained: bool, **kwargs) -> nn.Module:
    """What every timm entry point of ours does: the entry point's sizes under the arguments given (earlier
    versions' names read as today's), weights only from a named file, built by timm's ``build_model_with_cfg``
    (``features_only=True``: the maps of ``forward_intermediates``)."""
    from timm.models import build_model_with_cfg

    from .registry import architecture_of

    arch = architecture_of(variant)
    kwargs = {**arch.sizes[variant], **renamed_args(kwargs)}
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = _weights_overlay(variant, kwargs)
    return build_model_with_cfg(cls, variant, pretrained, feature_cfg=_feature_cfg(arch, variant, kwargs), **kwargs)
