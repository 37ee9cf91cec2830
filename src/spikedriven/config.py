"""The typed run configuration: YAML file + command-line flags -> validated ``Config``.

Every field is a YAML key (``batch_size``) and a flag (``--batch-size``).
Unknown keys, wrong types and impossible values are refused before anything
starts, with one sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from .atomic import write_text_atomic
from .errors import ConfigError
from .neurons import SPIKE_MODES, SURROGATES, NeuronSpec
from .spike_ops import MEMORY_MODES

DATASETS = ("torch/cifar10", "torch/cifar100", "sklearn/digits")
AMP_MODES = ("none", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # modes that capture CUDA graphs on a GPU


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: list(default) if isinstance(default, list) else dict(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # --- data
    dataset: str = _f("torch/cifar10", f"one of {', '.join(DATASETS)}", choices=DATASETS)
    data_dir: str = _f("./data", "folder holding cifar-10-batches-py/ or cifar-100-python/")
    download: bool = _f(False, "download the dataset with torchvision if it is missing (needs internet)")
    num_classes: int = _f(10, "number of classes")
    img_size: int = _f(32, "input image size (square)")
    in_channels: int = _f(3, "input channels")
    mean: list = _f([0.4914, 0.4822, 0.4465], "normalisation mean per channel")
    std: list = _f([0.2470, 0.2435, 0.2616], "normalisation std per channel")
    crop_pct: float = _f(1.0, "centre-crop fraction at evaluation")
    scale: list = _f([1.0, 1.0], "random-resized-crop scale range ([1, 1]: no random crop)")
    ratio: list = _f([1.0, 1.0], "random-resized-crop aspect-ratio range")
    interpolation: str = _f("bicubic", "resize interpolation")
    hflip: float = _f(0.5, "horizontal flip probability")
    aa: Optional[str] = _f("rand-m9-n1-mstd0.4-inc1", "timm RandAugment string, or none")
    color_jitter: float = _f(0.5, "colour jitter (timm ignores it when RandAugment is on)")
    val_size: int = _f(0, "hold out this many training images as validation set (0: evaluate on the test set)")
    workers: Optional[int] = _f(None, "data-loader worker processes per training process, or auto (also none): on a GPU one "
                                "per CPU core the process may use, less one, at most 32; on CPU 1 (the model needs the cores)",
                                auto=True)
    # --- mixup / loss
    mixup: float = _f(0.5, "mixup alpha (0: off)")
    cutmix: float = _f(0.0, "cutmix alpha (0: off)")
    mixup_prob: float = _f(1.0, "probability of applying mixup/cutmix to a batch")
    mixup_switch_prob: float = _f(0.5, "probability of cutmix instead of mixup when both are on")
    mixup_mode: str = _f("batch", "mixup mode: batch, pair or elem", choices=("batch", "pair", "elem"))
    mixup_off_epoch: int = _f(200, "turn mixup off from this epoch on (0: keep it on for all epochs, as the published runs did)")
    smoothing: float = _f(0.1, "label smoothing")
    tet: bool = _f(False, "TET loss: average the loss over per-time-step logits")
    # --- model
    model: str = _f("sdt", "model name in the timm registry")
    layer: int = _f(2, "number of transformer blocks")
    dim: int = _f(256, "embedding dimension")
    num_heads: int = _f(8, "attention heads")
    mlp_ratio: float = _f(4.0, "MLP hidden size / dim")
    time_steps: int = _f(4, "time steps T")
    pooling_stat: str = _f("0011", "max-pool after each of the four SPS stages (four 0/1 flags)")
    # --- neuron
    spike_mode: str = _f("lif", f"neuron model: {', '.join(SPIKE_MODES)}", choices=SPIKE_MODES)
    v_threshold: float = _f(1.0, "firing threshold u_th of every neuron but the attention one")
    v_reset: Optional[float] = _f(None, "hard-reset potential (none: 0 for lif/if; soft reset for if_soft)")
    tau: float = _f(2.0, "LIF membrane time constant")
    surrogate: str = _f("sigmoid", f"surrogate gradient: {', '.join(SURROGATES)}", choices=tuple(SURROGATES))
    surrogate_alpha: float = _f(4.0, "surrogate sharpness alpha")
    detach_reset: bool = _f(True, "no gradient through the reset")
    attn_v_threshold: float = _f(0.5, "threshold of the neuron after the attention sum")
    # --- optimisation
    opt: str = _f("adamw", "timm optimizer name")
    lr: float = _f(3e-4, "peak learning rate")
    weight_decay: float = _f(0.06, "weight decay (not applied to biases and norm weights)")
    opt_betas: list = _f([0.9, 0.999], "Adam betas")
    opt_eps: float = _f(1e-8, "optimizer epsilon")
    clip_grad: Optional[float] = _f(None, "clip the gradient norm to this value (none: off)")
    sched: str = _f("cosine", "timm scheduler name")
    epochs: int = _f(300, "epochs of the schedule (cooldown comes on top)")
    warmup_epochs: int = _f(20, "linear warm-up epochs")
    warmup_lr: float = _f(1e-6, "learning rate at epoch 0")
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine and during cooldown")
    cooldown_epochs: int = _f(10, "epochs at min_lr after the schedule")
    # --- run
    batch_size: int = _f(64, "training batch size (per process)")
    val_batch_size: int = _f(64, "evaluation batch size")
    seed: int = _f(42, "random seed")
    amp: str = _f("none", "mixed precision: none, bf16 or fp16", choices=AMP_MODES)
    channels_last: Optional[bool] = _f(None, "channels-last memory format: true, false, or auto (also none): on for CUDA", auto=True)
    backward_memory: str = _f("auto", "what training keeps for backward, all with the same gradients: full; lean (bool spikes, "
                              "batch norm + neuron recomputed: 38 % of full's activation memory); min (lean, and the "
                              "convolutions recomputed from their spikes: 13 %, one more forward convolution per layer); "
                              "auto (lean on GPUs, full on CPU)", choices=MEMORY_MODES)
    compile: Optional[bool] = _f(None, "torch.compile the model: true, false, or auto (also none): on for a "
                                 "single-process CUDA run, off on CPU, under torchrun and with backward_memory min", auto=True)
    compile_mode: str = _f("reduce-overhead", "torch.compile mode; reduce-overhead adds CUDA graphs on GPUs "
                           "(measured fastest at the study's batch 64) and equals default on CPU",
                           choices=COMPILE_MODES)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    output: Optional[str] = _f(None, "run folder (default: output/train/<timestamp>-<dataset>-<mode>-uth<v>-seed<s>)")
    nonfinite: str = _f("stop", "on a non-finite loss: stop the run, or skip the step", choices=NONFINITE_POLICIES)
    log_interval: int = _f(50, "log every N steps")

    # ------------------------------------------------------------ helpers
    @property
    def total_epochs(self) -> int:
        return self.epochs + self.cooldown_epochs

    def channels_last_for(self, device_type: str) -> bool:
        """auto: channels-last on CUDA (cuDNN's fast layout); on CPU it measured slower."""
        return device_type == "cuda" if self.channels_last is None else self.channels_last

    def compile_for(self, device_type: str, distributed: bool) -> Optional[str]:
        """The torch.compile mode this run uses on ``device_type``, or None for eager.

        auto compiles single-process CUDA runs only: on CPU compiling takes
        minutes for a small gain, and CUDA graphs under DDP are not supported.
        Nor does it with ``backward_memory: min``: a compiled graph chooses for
        itself what backward keeps, and min's recomputation is an eager one.
        """
        if self.compile is None:
            wanted = device_type == "cuda" and not distributed and self.backward_memory != "min"
            return self.compile_mode if wanted else None
        return self.compile_mode if self.compile else None

    def neuron_spec(self) -> NeuronSpec:
        return NeuronSpec(
            mode=self.spike_mode,
            v_threshold=self.v_threshold,
            v_reset=self.v_reset,
            tau=self.tau,
            surrogate=self.surrogate,
            surrogate_alpha=self.surrogate_alpha,
            detach_reset=self.detach_reset,
        )

    def model_kwargs(self) -> dict:
        """Arguments for ``timm.create_model(self.model, **kwargs)``."""
        neuron = self.neuron_spec().to_dict()
        neuron["spike_mode"] = neuron.pop("mode")
        return dict(
            num_classes=self.num_classes, img_size=self.img_size, in_chans=self.in_channels, embed_dim=self.dim,
            depth=self.layer, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, T=self.time_steps,
            pooling_stat=self.pooling_stat, attn_v_threshold=self.attn_v_threshold, tet=self.tet, **neuron,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Config":
        return from_mapping({**self.to_dict(), **changes}, source="overrides")

    def validate(self) -> "Config":
        def need(cond: bool, msg: str):
            if not cond:
                raise ConfigError(msg)

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        for name in ("num_classes", "img_size", "in_channels", "layer", "dim", "num_heads", "time_steps", "batch_size", "val_batch_size"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.workers is None or self.workers >= 0, f"workers must be >= 0 or auto, got {self.workers}")
        for name in ("val_size", "epochs", "warmup_epochs", "cooldown_epochs", "mixup_off_epoch"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.epochs + self.cooldown_epochs >= 1, "epochs + cooldown_epochs must be at least 1")
        need(self.dim % 8 == 0, f"dim must be divisible by 8 (SPS widths dim/8, dim/4, dim/2), got {self.dim}")
        need(self.dim % self.num_heads == 0, f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        need(len(self.pooling_stat) == 4 and not set(self.pooling_stat) - {"0", "1"},
             f"pooling_stat must be four 0/1 flags such as '0011', got {self.pooling_stat!r}")
        need(len(self.mean) == self.in_channels and len(self.std) == self.in_channels,
             f"mean and std need {self.in_channels} values (in_channels), got {len(self.mean)} and {len(self.std)}")
        need(all(s > 0 for s in self.std), "every std value must be > 0")
        need(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1, f"scale must be [low, high] within (0, 1], got {self.scale}")
        need(len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1], f"ratio must be [low, high] with 0 < low <= high, got {self.ratio}")
        need(len(self.opt_betas) == 2 and all(0 <= b < 1 for b in self.opt_betas), f"opt_betas must be two numbers in [0, 1), got {self.opt_betas}")
        for name in ("hflip", "mixup_prob", "mixup_switch_prob", "smoothing"):
            need(0 <= getattr(self, name) <= 1, f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("mixup", "cutmix", "color_jitter", "weight_decay", "warmup_lr", "min_lr"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.batch_size % 2 == 0 or (self.mixup == 0 and self.cutmix == 0) or self.mixup_mode == "elem",
             f"mixup needs an even batch_size, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        need(0 < self.crop_pct <= 1, f"crop_pct must lie in (0, 1], got {self.crop_pct}")
        need(self.clip_grad is None or self.clip_grad > 0, f"clip_grad must be > 0 or none, got {self.clip_grad}")
        need(self.attn_v_threshold > 0, f"attn_v_threshold must be > 0, got {self.attn_v_threshold}")
        need(self.log_interval >= 1, f"log_interval must be >= 1, got {self.log_interval}")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self.neuron_spec()  # neuron settings validate themselves
        return self


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _base_type(name: str):
    hint = _HINTS[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    return hint, optional


TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0"}


def coerce(name: str, value: Any, source: str) -> Any:
    """Convert ``value`` to the type of field ``name`` or raise one clear sentence."""
    base, optional = _base_type(name)
    where = f"{name} (from {source})"
    takes_auto = FIELDS[name].metadata.get("auto", False)
    or_auto = " or auto" if takes_auto else ""
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in {"none", "null", ""}):
        if optional:
            return None
        raise ConfigError(f"{where} needs a value of type {base.__name__}, got nothing")
    if takes_auto and isinstance(value, str) and value.strip().lower() == "auto":
        return None  # None is how such a field says auto
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise ConfigError(f"{where} must be {'true, false or auto' if takes_auto else 'true or false'}, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer{or_auto}, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer{or_auto}, got {value!r}")
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)  # also takes YAML's "3e-4", which PyYAML reads as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if base is list:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
        try:
            out = [float(v) for v in value if not isinstance(v, bool)]
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a list of numbers, got {value!r}") from None
        if len(out) != len(value) or not all(math.isfinite(v) for v in out):
            raise ConfigError(f"{where} must be a list of finite numbers, got {value!r}")
        return out
    raise AssertionError(f"unhandled config type for {name}")


def closest_key(key: str) -> Optional[str]:
    guess = difflib.get_close_matches(key.replace("-", "_"), FIELDS, n=1, cutoff=0.6)
    return guess[0] if guess else None


def unknown_key_error(key: str, source: str) -> ConfigError:
    guess = closest_key(str(key))
    hint = f"; did you mean '{guess}'?" if guess else "; run with --help to list the valid keys"
    return ConfigError(f"unknown config key '{key}' in {source}{hint}")


def from_mapping(values: Mapping[str, Any], source: str, base: Optional[Config] = None) -> Config:
    """A validated Config from ``base`` (defaults if None) updated with ``values``."""
    data = (base or Config()).to_dict()
    for key, value in values.items():
        if key not in FIELDS:
            raise unknown_key_error(key, source)
        data[key] = coerce(key, value, source)
    return Config(**data).validate()


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value pairs, got {type(data).__name__}")
    return data


def load_config(path: Optional[str | Path] = None, overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Defaults <- YAML file <- overrides (e.g. parsed flags), validated."""
    cfg = Config()
    if path is not None:
        cfg = from_mapping(load_yaml(path), source=str(path))
    if overrides:
        cfg = from_mapping(overrides, source="command line", base=cfg)
    return cfg.validate()


def requested_values(path: Optional[str | Path], overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    """The values given explicitly (a config file, then flags over it) and, for those from
    the file, the file they came from; the defaults are not in them."""
    from_file = load_yaml(path) if path is not None else {}
    sources = {key: str(path) for key in from_file if key not in overrides}
    return {**from_file, **overrides}, sources


def save_config(cfg: Config, path: str | Path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ------------------------------------------------------------ command-line flags


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser, exclude: tuple = ()) -> None:
    """One flag per config field; every flag defaults to "not given" so the YAML wins."""
    import argparse

    group = parser.add_argument_group("config overrides (each also a YAML key)")
    for name, f in FIELDS.items():
        if name in exclude:
            continue
        base, _ = _base_type(name)
        kwargs: dict = dict(dest=f"cfg_{name}", default=argparse.SUPPRESS, help=f.metadata.get("help", "").replace("%", "%%"))
        if base is list:
            kwargs["nargs"] = "+"
        if base is bool:  # a bare --download means true; --download false still reads
            kwargs.update(nargs="?", const="true")
        metavar = {bool: "BOOL", int: "INT", float: "FLOAT", list: "X"}.get(base, "STR")
        if f.metadata.get("auto"):
            metavar += "|auto"
        names = [flag_name(name)]
        if name == "tet":
            names.append("--TET")  # the study's spelling
        group.add_argument(*names, metavar=metavar, **kwargs)


def overrides_from_args(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
