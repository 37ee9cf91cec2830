"""The Config dataclass: every setting of a run, its help, its default and its checks (``validate``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional


from ..errors import ConfigError, did_you_mean
from ..neurons import NeuronSpec, neuron_class, resolve_spec
from ..plugins import load_plugins, plugin_key
from ..runtime import FUSED_OPTIMIZERS
from ..spike_ops import MEMORY_MODES

AMP_MODES = ("none", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ERASE_MODES = ("const", "rand", "pixel")  # timm RandomErasing's fills


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
    in_chans: int = _f(3, "input channels (the study's in_channels)")
    mean: Optional[list] = _f(None, "normalisation mean per channel (none: the dataset's own, e.g. CIFAR-10's)")
    std: Optional[list] = _f(None, "normalisation std per channel (none: the dataset's own)")
    crop_pct: float = _f(1.0, "centre-crop fraction at evaluation")
    scale: list = _f([1.0, 1.0], "random-resized-crop scale range ([1, 1]: no random crop)")
    ratio: list = _f([1.0, 1.0], "random-resized-crop aspect-ratio range")
    interpolation: str = _f("bicubic", "resize interpolation")
    hflip: float = _f(0.5, "horizontal flip probability")
    aa: Optional[str] = _f("rand-m9-n1-mstd0.4-inc1", "timm RandAugment string, or none")
    aa_ops: Optional[list[str]] = _f(None, "RandAugment's ops, by timm's names (Spikformer's CIFAR set: Equalize "
                                     "Rotate ShearX TranslateXRel TranslateYRel); none: timm's own set for aa (with inc1 "
                                     "its increasing variants)")
    color_jitter: float = _f(0.5, "colour jitter (timm ignores it when RandAugment is on)")
    reprob: float = _f(0.0, "random erasing: the probability that a training image gets boxes erased (timm's "
                       "RandomErasing, on the normalised batch on the run's device before mixup, as timm's prefetcher; "
                       "each step's draws seeded from (seed, epoch, rank, step); never at evaluation); 0: off")
    remode: str = _f("const", "what fills an erased box: const (0 once normalised: the mean colour), rand (one normal "
                     "colour per box) or pixel (normal noise per pixel)", choices=ERASE_MODES)
    recount: int = _f(1, "boxes per erased image: drawn from 1 to recount, their area shared (timm's max_count)")
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
    # --- distillation (DeiT's, as SDT-V2's fine-tune uses it): a model with a kd head learns a teacher's predictions
    teacher: Optional[str] = _f(None, "the teacher, a timm model name (caformer_b36.sail_in22k_ft_in1k in SDT-V2's "
                                "fine-tune); its weights come from teacher_checkpoint, nothing is downloaded")
    teacher_checkpoint: Optional[str] = _f(None, "the teacher's weights: a file timm reads for that model (its "
                                           "original's .pth, a timm .pth or .safetensors)")
    distillation_type: str = _f("hard", "hard: the kd head learns the teacher's top class (cross-entropy); soft: its "
                                "distribution at distillation_tau (KL)", choices=("hard", "soft"))
    distillation_alpha: float = _f(0.5, "loss = (1 - alpha) label loss of the head + alpha distillation loss of the kd head")
    distillation_tau: float = _f(1.0, "the softmax temperature of soft distillation")
    # --- model
    model: str = _f("sdt", "the model: a registered name (spikedriven models lists each with its settings)")
    model_args: dict = _f({}, "the model's settings by name (depth=4 embed_dim=384); each is also a top-level key "
                          "and a flag (--depth 4), the model's defaults otherwise")
    models: dict = _f({}, "settings per model, for a config several models share (a study's --models): "
                      "{NAME: {setting: value}}; the run's model takes its entry, under model_args (YAML only)",
                      flag=False)
    time_steps: int = _f(4, "time steps T")
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
    neuron_args: dict = _f({}, "further settings of the neuron by name (levels=8 for multispike); each neuron's "
                           "own settings are also flags (--levels 8)")
    neurons: dict = _f({}, "settings per neuron, for a config several neurons share (a study's --modes): "
                       "{MODE: {setting: value}}; the run's neuron takes its entry, under neuron_args (YAML only)",
                       flag=False)
    plugins: list[str] = _f([], "Python files or modules that register neurons, encodings or models of your own "
                            "(recorded: evaluation and resuming load them again)")
    # --- input encoding (spikedriven encodings lists each one's settings)
    encoding: str = _f("direct", "input encoding: a registered name (direct: the analogue image, repeated over T; "
                       "simple_poisson, the study's; rate; latency; or one of --plugins)")
    encoding_args: dict = _f({}, "the encoding's settings by name (gain=2 for rate, threshold=0.1 for latency)")
    encodings: dict = _f({}, "settings per encoding, for a config several encodings share (a study's --vary "
                         "encoding=...): {NAME: {setting: value}}; the run's encoding takes its entry, under "
                         "encoding_args (YAML only)", flag=False)
    encode_eval: bool = _f(True, "encode evaluation batches as training ones (with a fixed epoch key: every evaluation "
                           "draws the same spikes); false: training batches only, evaluation on the analogue image, "
                           "as the study did")
    # --- optimisation
    opt: str = _f("adamw", "timm optimizer name")
    lr: float = _f(3e-4, "peak learning rate")
    weight_decay: float = _f(0.06, "weight decay (not applied to biases and norm weights)")
    opt_betas: Optional[list] = _f([0.9, 0.999], "Adam betas (none: the optimizer's own)")
    opt_eps: Optional[float] = _f(1e-8, "optimizer epsilon (none: the optimizer's own, e.g. LAMB's 1e-6 in the "
                                  "original's configs that say opt_eps: None)")
    opt_kwargs: dict = _f({}, "further keyword arguments of the timm optimizer, as timm's --opt-kwargs "
                          "(trust_clip=true for LAMB, as SDT-V2's and -V3's recipes use it)")
    clip_grad: Optional[float] = _f(None, "clip the gradient norm to this value (none: off)")
    sched: str = _f("cosine", "timm scheduler name")
    epochs: int = _f(300, "epochs of the schedule (cooldown comes on top)")
    warmup_epochs: int = _f(20, "linear warm-up epochs")
    warmup_lr: float = _f(1e-6, "learning rate at epoch 0")
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine and during cooldown")
    cooldown_epochs: int = _f(10, "epochs at min_lr after the schedule")
    warmup_prefix: bool = _f(False, "the cosine starts after the warm-up and spans the remaining epochs, as SDT-V2's and "
                             "-V3's recipes (timm's --warmup-prefix, with epochs counting the warm-up); false: the "
                             "cosine runs on the absolute epoch, as the SDT study's")
    sched_on_updates: bool = _f(False, "set the learning rate at every step from the fractional epoch, as SDT-V2's and "
                                "-V3's recipes (timm's --sched-on-updates); false: once per epoch")
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
    fused_optimizer: Optional[bool] = _f(None, "the optimizer step as one fused kernel (torch's fused Adam / AdamW, "
                                         "same update up to float rounding): true, false, or auto (also none): on "
                                         "for CUDA with adam or adamw, off on CPU (the tested reference)",
                                         auto=True)
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
        own = self.neurons.get(self.spike_mode, {})
        return resolve_spec(NeuronSpec(self.spike_mode, **{**given, **own, **self.neuron_args}))

    def encoding_settings(self) -> dict:
        """The encoding's settings, every one filled in and checked: its defaults, under its entry in
        ``encodings``, under ``encoding_args``."""
        from ..encodings import encoding_class

        load_plugins(self.plugins)
        cls = encoding_class(self.encoding)
        return cls.resolve({**self.encodings.get(self.encoding, {}), **self.encoding_args})

    def model_settings(self) -> dict:
        """The model's own settings, every one filled in and checked: its entry point's defaults, under its
        entry in ``models``, under ``model_args``."""
        from ..models import architecture_of

        arch = architecture_of(self.model)
        return arch.resolve(self.model, {**self.models.get(self.model, {}), **self.model_args},
                            source="model_args, a top-level key or a flag")

    def model_kwargs(self) -> dict:
        """Arguments for ``timm.create_model(self.model, **kwargs)``."""
        return {**{name: getattr(self, name) for name in MODEL_FIELDS}, **self.model_settings(),
                "neuron": self.neuron_spec().to_dict()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        def need(cond: bool, msg: str):
            if not cond:
                raise ConfigError(msg)

        from ..data import dataset_def  # here: the data package reads this module

        definition = dataset_def(self.dataset)
        if self.mean is None:  # resolved now, so that config.yaml and checkpoints record the values used
            self.mean = list(definition.mean)
        if self.std is None:
            self.std = list(definition.std)

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}"
                                  f"{did_you_mean(value, choices)}")
        for name in ("num_classes", "img_size", "in_chans", "time_steps", "batch_size", "val_batch_size"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.workers is None or self.workers >= 0, f"workers must be >= 0 or auto, got {self.workers}")
        need(self.eval_img_size is None or self.eval_img_size >= 1, f"eval_img_size must be >= 1, got {self.eval_img_size}")
        need(0 <= self.tet_lamb <= 1, f"tet_lamb must lie in [0, 1], got {self.tet_lamb}")
        need(self.bce_target_thresh is None or 0 <= self.bce_target_thresh <= 1,
             f"bce_target_thresh must lie in [0, 1] or be none, got {self.bce_target_thresh}")
        for name in ("val_size", "epochs", "warmup_epochs", "cooldown_epochs", "mixup_off_epoch", "aug_repeats"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.epochs + self.cooldown_epochs >= 1, "epochs + cooldown_epochs must be at least 1")
        need(not self.warmup_prefix or self.warmup_epochs < self.epochs,
             f"warmup_prefix: the cosine runs over the epochs after the warm-up, and warmup_epochs "
             f"{self.warmup_epochs} leaves none of epochs {self.epochs}")
        need(len(self.mean) == self.in_chans and len(self.std) == self.in_chans,
             f"mean and std need {self.in_chans} values (in_chans), got {len(self.mean)} and {len(self.std)}")
        need(all(s > 0 for s in self.std), "every std value must be > 0")
        need(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1, f"scale must be [low, high] within (0, 1], got {self.scale}")
        need(len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1], f"ratio must be [low, high] with 0 < low <= high, got {self.ratio}")
        need(self.opt_betas is None or (len(self.opt_betas) == 2 and all(0 <= b < 1 for b in self.opt_betas)),
             f"opt_betas must be two numbers in [0, 1) or none, got {self.opt_betas}")
        need(self.opt_eps is None or self.opt_eps > 0, f"opt_eps must be > 0 or none, got {self.opt_eps}")
        need(not self.fused_optimizer or self.opt in FUSED_OPTIMIZERS,
             f"fused_optimizer: true needs opt {' or '.join(FUSED_OPTIMIZERS)} (torch's fused kernels); "
             f"opt {self.opt} has none, so leave fused_optimizer at auto or false")
        need(0 <= self.reprob <= 1, f"reprob must lie in [0, 1], got {self.reprob}")
        need(self.recount >= 1, f"recount must be >= 1, got {self.recount}")
        need(not self.reprob or not definition.frames,
             f"random erasing (reprob) works on images and {self.dataset} serves event frames; set reprob 0")
        if self.aa_ops is not None:
            from timm.data.auto_augment import NAME_TO_OP

            unknown = [op for op in self.aa_ops if op not in NAME_TO_OP]
            need(not unknown, f"aa_ops: {', '.join(unknown)} is not a timm RandAugment op; the ops are "
                              f"{', '.join(sorted(NAME_TO_OP))}")
            need(bool(self.aa_ops) and str(self.aa).startswith("rand"),
                 f"aa_ops picks RandAugment's ops: it needs at least one op and a RandAugment aa (rand-...), "
                 f"got aa {self.aa!r}")
        for name in ("hflip", "mixup_prob", "mixup_switch_prob", "smoothing"):
            need(0 <= getattr(self, name) <= 1, f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("mixup", "cutmix", "color_jitter", "weight_decay", "warmup_lr", "min_lr"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.batch_size % 2 == 0 or (self.mixup == 0 and self.cutmix == 0) or self.mixup_mode == "elem",
             f"mixup needs an even batch_size, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 < self.crop_pct <= 1, f"crop_pct must lie in (0, 1], got {self.crop_pct}")
        need(self.clip_grad is None or self.clip_grad > 0, f"clip_grad must be > 0 or none, got {self.clip_grad}")
        need(self.log_interval >= 1, f"log_interval must be >= 1, got {self.log_interval}")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self.plugins = [plugin_key(p) for p in self.plugins]  # recorded as absolute paths: found from any folder
        self.neuron_spec()  # neuron settings validate themselves (this loads the plugins)
        self._check_neurons()
        self._check_encodings(definition)
        self._check_models()
        self._check_distillation()
        return self

    def _check_neurons(self) -> None:
        """Every entry of ``neurons``: a registered neuron, settings it takes, values it accepts."""
        for mode, settings in self.neurons.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"neurons: {mode} must map setting names to values, got {settings!r}")
            try:
                resolve_spec(NeuronSpec(mode, **settings))
            except ConfigError as e:
                raise ConfigError(f"neurons: {mode}: {e}") from None

    def _check_encodings(self, definition) -> None:
        """The encoding and every entry of ``encodings``: registered, settings they take, values they accept;
        each value given is kept as read (a flag's "2" as 2.0)."""
        from ..encodings import encoding_class

        for name, settings in self.encodings.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"encodings: {name} must map setting names to values, got {settings!r}")
            try:
                resolved = encoding_class(name).resolve(settings)
            except ConfigError as e:
                raise ConfigError(f"encodings: {name}: {e}") from None
            self.encodings[name] = {key: resolved[key] for key in settings}
        resolved = self.encoding_settings()
        self.encoding_args = {key: resolved[key] for key in self.encoding_args}
        if self.encoding != "direct" and definition.frames:
            raise ConfigError(f"encoding {self.encoding} turns images into frames and {self.dataset} serves event "
                              "frames already; use encoding direct")

    def _check_distillation(self) -> None:
        """A teacher comes with its weights and a model with a kd head to learn from it; a kd head without a
        teacher may be evaluated and exported, and training refuses it (``engine.trainer``)."""
        if (self.teacher is None) != (self.teacher_checkpoint is None):
            raise ConfigError("distillation needs both teacher (a timm model name) and teacher_checkpoint (its "
                              "weights: nothing is downloaded); give both, or neither")
        if self.teacher is not None and not self.model_settings().get("kd"):
            raise ConfigError(f"a teacher trains a model's distillation head, and model {self.model} has none: "
                              "give kd: true (a model that takes it: metaspikformer_*), or drop teacher")
        if not 0 <= self.distillation_alpha <= 1:
            raise ConfigError(f"distillation_alpha must lie in [0, 1], got {self.distillation_alpha}")
        if self.distillation_tau <= 0:
            raise ConfigError(f"distillation_tau must be > 0, got {self.distillation_tau}")

    def _check_models(self) -> None:
        """The model's settings, and every entry of ``models``: a name that is registered, settings it takes;
        each value given is kept as read (a flag's "4" as 4), and no default is added."""
        from ..models import architecture_of

        for name, settings in self.models.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"models: {name} must map setting names to values, got {settings!r}")
            resolved = architecture_of(name).resolve(name, settings, source=f"models: {name}")
            self.models[name] = {key: resolved[key] for key in settings}
        resolved = self.model_settings()
        self.model_args = {key: resolved[key] for key in self.model_args}


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
# The fields every model takes as constructor arguments, under the model's own names (timm's where timm has
# one); a model's own settings (depth, embed_dim, ...) are its architecture's (model_args), and the study's
# spellings of them (layer, dim, in_channels) are read as those (original_keys).
MODEL_FIELDS = ("num_classes", "img_size", "in_chans", "time_steps", "tet")
# The neuron settings with config fields of their own (the study's and SpikingJelly's names);
# any other setting of a neuron goes through neuron_args.
NEURON_FIELDS = ("v_threshold", "v_reset", "tau", "surrogate", "surrogate_alpha", "detach_reset")


# ------------------------------------------------------------ command-line flags


