"""The typed run configuration: YAML file + command-line flags -> validated ``Config``.

Every field is a YAML key (``batch_size``) and a flag (``--batch-size``).
Unknown keys, wrong types and impossible values are refused before anything
starts, with one sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from .atomic import write_text_atomic
from .errors import ConfigError
from .original_keys import inert_line, normalised, read_vocabulary
from .neurons import NEURONS, NeuronSpec, load_plugins, neuron_class, plugin_key, resolve_spec
from .spike_ops import MEMORY_MODES

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
    dataset: str = _f("torch/cifar10", "torch/cifar10, torch/cifar100, sklearn/digits, cifar10-dvs, dvs128-gesture or "
                      "imagenet (the original configs' cifar10 / gesture also read)")
    data_dir: str = _f("./data", "folder holding cifar-10-batches-py/ or cifar-100-python/")
    download: bool = _f(False, "download the dataset with torchvision if it is missing (needs internet)")
    num_classes: int = _f(10, "number of classes")
    img_size: int = _f(32, "input image size (square)")
    in_channels: int = _f(3, "input channels")
    mean: Optional[list] = _f(None, "normalisation mean per channel (none: the dataset's own, e.g. CIFAR-10's)")
    std: Optional[list] = _f(None, "normalisation std per channel (none: the dataset's own)")
    crop_pct: float = _f(1.0, "centre-crop fraction at evaluation")
    scale: list = _f([1.0, 1.0], "random-resized-crop scale range ([1, 1]: no random crop)")
    ratio: list = _f([1.0, 1.0], "random-resized-crop aspect-ratio range")
    interpolation: str = _f("bicubic", "resize interpolation")
    hflip: float = _f(0.5, "horizontal flip probability")
    aa: Optional[str] = _f("rand-m9-n1-mstd0.4-inc1", "timm RandAugment string, or none")
    color_jitter: float = _f(0.5, "colour jitter (timm ignores it when RandAugment is on)")
    val_size: int = _f(0, "hold out this many training images as validation set (0: evaluate on the test set)")
    aug_repeats: int = _f(0, "repeated augmentation: each training image this many times per epoch, differently "
                          "augmented (timm's RepeatAugSampler, the ImageNet recipe's 3; 0 or 1: off)")
    eval_img_size: Optional[int] = _f(None, "evaluate at this image size (the original's --large-valid: 288 for "
                                      "ImageNet); none: img_size")
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
    tet_means: float = _f(1.0, "TET's regulariser: the value each per-step output is pulled to")
    tet_lamb: float = _f(0.0, "TET's regulariser weight: (1 - lamb) mean_t CE + lamb MSE(outputs, means); 0: off")
    bce_loss: bool = _f(False, "binary cross-entropy instead of cross-entropy (timm's BinaryCrossEntropy)")
    bce_target_thresh: Optional[float] = _f(None, "with bce_loss: targets above this become 1 (none: soft targets)")
    # --- model
    model: str = _f("sdt", "model name in the timm registry")
    layer: int = _f(2, "number of transformer blocks")
    dim: int = _f(256, "embedding dimension")
    num_heads: int = _f(8, "attention heads")
    mlp_ratio: float = _f(4.0, "MLP hidden size / dim")
    time_steps: int = _f(4, "time steps T")
    pooling_stat: str = _f("0011", "max-pool after each of the four SPS stages (four 0/1 flags)")
    dvs_mode: bool = _f(False, "the original's attention for event data: 3x3 max-pools on k, v, k*v and q*kv")
    # --- neuron (settings a neuron does not take must stay at these defaults; spikedriven neurons lists each one's)
    spike_mode: str = _f("lif", "neuron model: a registered name (lif, lif_soft, plif, if, if_soft, if_learnable, "
                         "multispike, or one of --plugins)")
    v_threshold: float = _f(1.0, "firing threshold u_th of every neuron but the attention one")
    v_reset: Optional[float] = _f(None, "hard-reset potential (none: 0 for lif/if; soft reset for if_soft)")
    tau: float = _f(2.0, "LIF membrane time constant")
    surrogate: str = _f("sigmoid", "surrogate gradient: sigmoid, atan, piecewise_quadratic, erf, soft_sign, rect")
    surrogate_alpha: Optional[float] = _f(None, "surrogate sharpness alpha (none: the surrogate's own, sigmoid 4, atan 2, "
                                          "as SpikingJelly's)")
    detach_reset: bool = _f(True, "no gradient through the reset")
    attn_v_threshold: float = _f(0.5, "threshold of the neuron after the attention sum")
    neuron_args: dict = _f({}, "further settings of the neuron by name (levels=8 for multispike); each neuron's "
                           "own settings are also flags (--levels 8)")
    plugins: list[str] = _f([], "Python files or modules that register neurons of your own (recorded: evaluation "
                            "and resuming load them again)")
    # --- optimisation
    opt: str = _f("adamw", "timm optimizer name")
    lr: float = _f(3e-4, "peak learning rate")
    weight_decay: float = _f(0.06, "weight decay (not applied to biases and norm weights)")
    opt_betas: Optional[list] = _f([0.9, 0.999], "Adam betas (none: the optimizer's own)")
    opt_eps: Optional[float] = _f(1e-8, "optimizer epsilon (none: the optimizer's own, e.g. LAMB's 1e-6 in the "
                                  "original's configs that say opt_eps: None)")
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
    log_wandb: bool = _f(False, "also log the epoch scalars to Weights & Biases (pip install 'spikedriven[wandb]'; "
                         "project: $WANDB_PROJECT or spikedriven; WANDB_MODE=offline without internet)")

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
        """The neuron these settings describe, every setting filled in and checked. A setting the neuron
        does not take is refused unless it is at its default (a config file shared by LIF and IF runs may
        well say ``tau: 2.0``)."""
        load_plugins(self.plugins)
        takes = neuron_class(self.spike_mode).settings()
        given = {}
        for key in NEURON_FIELDS:
            value = getattr(self, key)
            if key in takes:
                if value is not None:  # None: the neuron's own default
                    given[key] = value
            elif value != FIELDS[key].default:
                raise ConfigError(
                    f"neuron {self.spike_mode!r} takes no {key} (given {value!r}); its settings are "
                    f"{', '.join(takes) or 'none'} (spikedriven neurons lists every neuron's)"
                )
        return resolve_spec(NeuronSpec(self.spike_mode, **given, **self.neuron_args))

    def model_kwargs(self) -> dict:
        """Arguments for ``timm.create_model(self.model, **kwargs)``."""
        return dict(
            num_classes=self.num_classes, img_size=self.img_size, in_chans=self.in_channels, embed_dim=self.dim,
            depth=self.layer, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, T=self.time_steps,
            pooling_stat=self.pooling_stat, attn_v_threshold=self.attn_v_threshold, tet=self.tet, dvs_mode=self.dvs_mode,
            neuron=self.neuron_spec().to_dict(),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Config":
        return from_mapping({**self.to_dict(), **changes}, source="overrides")

    def validate(self) -> "Config":
        def need(cond: bool, msg: str):
            if not cond:
                raise ConfigError(msg)

        from .data import dataset_def  # here: the data package reads this module

        definition = dataset_def(self.dataset)
        if self.mean is None:  # resolved now, so that config.yaml and checkpoints record the values used
            self.mean = list(definition.mean)
        if self.std is None:
            self.std = list(definition.std)

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        for name in ("num_classes", "img_size", "in_channels", "layer", "dim", "num_heads", "time_steps", "batch_size", "val_batch_size"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.workers is None or self.workers >= 0, f"workers must be >= 0 or auto, got {self.workers}")
        need(self.eval_img_size is None or self.eval_img_size >= 1, f"eval_img_size must be >= 1, got {self.eval_img_size}")
        need(0 <= self.tet_lamb <= 1, f"tet_lamb must lie in [0, 1], got {self.tet_lamb}")
        need(self.bce_target_thresh is None or 0 <= self.bce_target_thresh <= 1,
             f"bce_target_thresh must lie in [0, 1] or be none, got {self.bce_target_thresh}")
        for name in ("val_size", "epochs", "warmup_epochs", "cooldown_epochs", "mixup_off_epoch", "aug_repeats"):
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
        need(self.opt_betas is None or (len(self.opt_betas) == 2 and all(0 <= b < 1 for b in self.opt_betas)),
             f"opt_betas must be two numbers in [0, 1) or none, got {self.opt_betas}")
        need(self.opt_eps is None or self.opt_eps > 0, f"opt_eps must be > 0 or none, got {self.opt_eps}")
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
        self.plugins = [plugin_key(p) for p in self.plugins]  # recorded as absolute paths: found from any folder
        self.neuron_spec()  # neuron settings validate themselves (this loads the plugins)
        return self


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
# The neuron settings with config fields of their own (the study's and SpikingJelly's names);
# any other setting of a neuron goes through neuron_args.
NEURON_FIELDS = ("v_threshold", "v_reset", "tau", "surrogate", "surrogate_alpha", "detach_reset")
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
    if typing.get_origin(base) is list:  # list[str]: names
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of names, got {value!r}")
        return list(value)
    if base is dict:
        return _settings_mapping(value, where)
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


def parse_key_values(items: Sequence[str], where: str) -> dict:
    """``key=value`` words, each value read as a YAML scalar (``0.5``, ``true``, ``[1, 1]``, ``hard``)."""
    pairs = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} takes key=value, got {item!r}")
        try:
            pairs[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{where} {item!r}: the value is not a valid YAML scalar") from None
    return pairs


def _settings_mapping(value: Any, where: str) -> dict:
    """A mapping of setting names to values: YAML's own, or ``key=value`` words from flags (``levels=8``)."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if isinstance(value, (list, tuple)):
        value = parse_key_values(value, where)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in value):
        raise ConfigError(f"{where} must map setting names to values, got {value!r}")
    return dict(value)


def from_mapping(values: Mapping[str, Any], source: str, base: Optional[Config] = None) -> Config:
    """A validated Config from ``base`` (defaults if None) updated with ``values``, which may use the
    original code's vocabulary (``TET``, ``model-ema: false``, ``drop_path``; see original_keys).

    Every problem of ``values`` (unknown keys, refused keys, wrong types) is reported in one message, so
    that a file is fixed in one round; keys that change nothing get one warning line per source."""
    reading = read_vocabulary(values, FIELDS)
    data = (base or Config()).to_dict()
    problems = list(reading.problems)
    for key, value in reading.values.items():
        try:
            data[key] = coerce(key, value, source)
        except ConfigError as e:
            problems.append(str(e))
    if len(problems) == 1:
        raise ConfigError(problems[0] if "(from " in problems[0] else f"{source}: {problems[0]}")
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problems: " + "; ".join(problems))
    if reading.experiment:
        data["output"] = experiment_output(data["output"], reading.experiment)
    if reading.inert:
        _warn_once(source, reading.inert)
    return Config(**data).validate()


def experiment_output(output: Optional[str], experiment: str) -> str:
    """timm's ``--experiment NAME``: the run folder NAME under ``--output`` (default output/train)."""
    return str(Path(output or "output/train") / experiment)


_WARNED: set = set()


def _warn_once(source: str, inert: Mapping[str, str]) -> None:
    import logging

    key = (source, tuple(inert))
    if key not in _WARNED:  # a study reads its file once per run: say it once
        _WARNED.add(key)
        logging.getLogger("spikedriven").warning(inert_line(source, inert))


def recorded_config(values: Mapping[str, Any], source: str, overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """A run's recorded config (a checkpoint's, a config.yaml); plugins given now replace the recorded ones
    before any is imported (a plugin file that moved, named again where it is now)."""
    values = dict(values)
    if overrides and "plugins" in overrides:
        values["plugins"] = overrides["plugins"]
    return from_mapping(values, source=source)


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
    # in our vocabulary, as load_config read them: the original's spellings are our keys, and its keys
    # that change nothing are not requests (load_config has refused the others already)
    reading = read_vocabulary({**from_file, **overrides}, FIELDS)
    requested = dict(reading.values)
    if reading.experiment:
        requested["output"] = experiment_output(requested.get("output"), reading.experiment)
    in_file = {normalised(key) for key in from_file} - {normalised(key) for key in overrides}
    sources = {key: str(path) for key in requested if key in in_file}
    return requested, sources


def save_config(cfg: Config, path: str | Path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ------------------------------------------------------------ command-line flags


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


# The config's sections, by the first field of each, for --help's groups.
SECTIONS = {"dataset": "data", "mixup": "mixup and loss", "model": "model", "spike_mode": "neuron",
            "opt": "optimisation", "sched": "schedule", "batch_size": "run"}
# Short and original spellings of flags: timm's -b / -j, the study's --TET.
FLAG_ALIASES = {"batch_size": ["-b"], "workers": ["-j"], "tet": ["--TET"]}


def _shown_default(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if default is None:
        return "auto" if f.metadata.get("auto") else "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list):
        return " ".join(str(v) for v in default) or "none"
    return str(default) if default != {} else "none"


def add_config_flags(parser, exclude: tuple = ()) -> None:
    """One flag per config field, grouped by the config's sections, each with its default in --help;
    every flag defaults to "not given" so that the YAML wins. A boolean is a bare flag (``--download``),
    ``--no-download`` turns it off, and ``--download false`` still reads."""
    import argparse

    group = None
    for name, f in FIELDS.items():
        if name in SECTIONS:
            group = parser.add_argument_group(f"{SECTIONS[name]} (each flag also a YAML key)")
        if name in exclude:
            continue
        base, _ = _base_type(name)
        text = f"{f.metadata.get('help', '')} (default: {_shown_default(f)})"
        kwargs: dict = dict(dest=f"cfg_{name}", default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        if base in (list, dict) or typing.get_origin(base) is list:
            kwargs["nargs"] = "+"
        if base is bool:  # a bare --download means true; --download false still reads
            kwargs.update(nargs="?", const="true")
        metavar = {bool: "BOOL", int: "INT", float: "FLOAT", list: "X", dict: "KEY=VALUE"}.get(base, "NAME" if kwargs.get("nargs") else "STR")
        if f.metadata.get("auto"):
            metavar += "|auto"
        group.add_argument(flag_name(name), *FLAG_ALIASES.get(name, []), metavar=metavar, **kwargs)
        if base is bool:
            group.add_argument("--no-" + name.replace("_", "-"), dest=f"cfg_{name}", action="store_const",
                               const="false", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _add_neuron_flags(parser)


def _add_neuron_flags(parser) -> None:
    """A flag for every setting of a registered neuron that has no config field of its own (into neuron_args)."""
    import argparse

    owners: dict[str, list] = {}
    for name, cls in NEURONS.items():
        for key, param in cls.settings().items():
            if key not in FIELDS:
                owners.setdefault(key, []).append((name, param))
    if not owners:
        return
    group = parser.add_argument_group("settings of particular neurons (each also neuron_args: {KEY: VALUE} in YAML)")
    for key, users in owners.items():
        metavar = {bool: "BOOL", int: "INT", float: "FLOAT"}.get(users[0][1].kind, "STR")
        text = "; ".join(f"{name}: {param.doc} (default {param.default})" for name, param in users)
        group.add_argument(flag_name(key), dest=f"neuron_{key}", metavar=metavar, default=argparse.SUPPRESS,
                           help=text.replace("%", "%%"))


def overrides_from_args(args) -> dict:
    values = vars(args)
    overrides = {k[4:]: v for k, v in values.items() if k.startswith("cfg_")}
    settings = {k[7:]: v for k, v in values.items() if k.startswith("neuron_")}
    if settings:  # --levels 8 is neuron_args levels=8, read as YAML reads it
        given = coerce("neuron_args", overrides.get("neuron_args", {}), "command line")
        overrides["neuron_args"] = {**given, **{k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in settings.items()}}
    return overrides
