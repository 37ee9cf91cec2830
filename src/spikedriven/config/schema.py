"""The Config dataclass: every setting of a run, its help, its default, its role and its checks (``validate``);
and the lists of settings derived from the roles (what a resume may change, what defines the trained network)."""

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


# What each setting is for: every field declares its role (``_f(..., role=...)``), and the lists that treat
# settings alike are derived from the roles (the end of this file): what a resume may change, what defines the
# trained network, --help's sections and the docs' reference. Each role: its title in --help and the docs, and
# a sentence on what its settings are.
ROLES = {
    "input": ("input", "What the network is given and answers: the dataset, its classes, image size and channels, "
                       "normalisation, input encoding."),
    "data": ("data", "How the training images are drawn and augmented."),
    "model": ("model", "The network: the model, its own settings, its time steps."),
    "neuron": ("neuron", "The network's spiking neurons (settings a neuron does not take must stay at their "
                         "defaults; spikedriven neurons lists each one's)."),
    "loss": ("mixup and loss", "Mixup and cutmix, the loss, and distillation from a teacher."),
    "optimisation": ("optimisation", "The optimizer, the batch size, the numeric precision and the seed."),
    "schedule": ("schedule", "The learning rate over the epochs, and how many."),
    "runtime": ("run", "How a run is carried out, not what it computes: a resumed run may be given new values, and "
                       "a study never calls a finished run stale because of them."),
    "reporting": ("reporting", "Where a run is written and what it logs (like run's, a resumed run may be given "
                               "new values)."),
}
# A finer mark, where a list needs one within a role.
KINDS = {
    "constructor": "passed to every model's constructor (MODEL_FIELDS)",
    "neuron_setting": "a neuron's setting with a field of its own (NEURON_FIELDS); any other goes through neuron_args",
    "length": "the schedule's length, which a resume may change (SCHEDULE_LENGTH)",
    "per_choice": "settings per model, neuron or encoding for a config several share: YAML only",
}


def _f(default, help: str, *, role: Optional[str] = None, kind: Optional[str] = None, **kw):
    """A config field: its default, its help, its role (one of ROLES), and where a list needs it, its kind."""
    if role not in ROLES:
        raise ValueError(f"config field {help[:40]!r}...: role must be one of {', '.join(ROLES)}, got {role!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"config field {help[:40]!r}...: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    metadata = {"help": help, "role": role, **({"kind": kind} if kind else {}), **kw}
    if kind == "per_choice":
        metadata["flag"] = False  # a mapping of mappings: no flag
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: list(default) if isinstance(default, list) else dict(default),
                     metadata=metadata)
    return field(default=default, metadata=metadata)


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class Config:
    # The fields in config.yaml's order, in blocks by topic; what each is for is its role (data_dir, in the data
    # block, is a runtime setting: a resume may change it).
    # --- data
    dataset: str = _f("torch/cifar10", "torch/cifar10, torch/cifar100, sklearn/digits, cifar10-dvs, dvs128-gesture or "
                      "imagenet (the original configs' cifar10 / gesture also read)", role="input")
    data_dir: str = _f("./data", "folder holding cifar-10-batches-py/ or cifar-100-python/", role="runtime")
    download: bool = _f(False, "download the dataset with torchvision if it is missing (needs internet)", role="runtime")
    num_classes: int = _f(10, "number of classes", role="input", kind="constructor")
    img_size: int = _f(32, "input image size (square)", role="input", kind="constructor")
    in_chans: int = _f(3, "input channels (the study's in_channels)", role="input", kind="constructor")
    mean: Optional[list] = _f(None, "normalisation mean per channel (none: the dataset's own, e.g. CIFAR-10's)",
                              role="input")
    std: Optional[list] = _f(None, "normalisation std per channel (none: the dataset's own)", role="input")
    crop_pct: float = _f(1.0, "centre-crop fraction at evaluation", role="data")
    scale: list = _f([1.0, 1.0], "random-resized-crop scale range ([1, 1]: no random crop)", role="data")
    ratio: list = _f([1.0, 1.0], "random-resized-crop aspect-ratio range", role="data")
    interpolation: str = _f("bicubic", "resize interpolation", role="data")
    hflip: float = _f(0.5, "horizontal flip probability", role="data")
    aa: Optional[str] = _f("rand-m9-n1-mstd0.4-inc1", "timm RandAugment string, or none", role="data")
    aa_ops: Optional[list[str]] = _f(None, "RandAugment's ops, by timm's names (Spikformer's CIFAR set: Equalize "
                                     "Rotate ShearX TranslateXRel TranslateYRel); none: timm's own set for aa (with inc1 "
                                     "its increasing variants)", role="data")
    color_jitter: float = _f(0.5, "colour jitter (timm ignores it when RandAugment is on)", role="data")
    reprob: float = _f(0.0, "random erasing: the probability that a training image gets boxes erased (timm's "
                       "RandomErasing, on the normalised batch on the run's device before mixup, as timm's prefetcher; "
                       "each step's draws seeded from (seed, epoch, rank, step); never at evaluation); 0: off", role="data")
    remode: str = _f("const", "what fills an erased box: const (0 once normalised: the mean colour), rand (one normal "
                     "colour per box) or pixel (normal noise per pixel)", choices=ERASE_MODES, role="data")
    recount: int = _f(1, "boxes per erased image: drawn from 1 to recount, their area shared (timm's max_count)",
                      role="data")
    val_size: int = _f(0, "hold out this many training images as validation set (0: evaluate on the test set)", role="data")
    aug_repeats: int = _f(0, "repeated augmentation: each training image this many times per epoch, differently "
                          "augmented (timm's RepeatAugSampler, the ImageNet recipe's 3; 0 or 1: off)", role="data")
    eval_img_size: Optional[int] = _f(None, "evaluate at this image size (the original's --large-valid: 288 for "
                                      "ImageNet); none: img_size", role="runtime")
    workers: Optional[int] = _f(None, "data-loader worker processes per training process, or auto (also none): on a GPU one "
                                "per CPU core the process may use, less one, at most 32; on CPU 1 (the model needs the cores)",
                                auto=True, role="runtime")
    # --- mixup / loss
    mixup: float = _f(0.5, "mixup alpha (0: off)", role="loss")
    cutmix: float = _f(0.0, "cutmix alpha (0: off)", role="loss")
    mixup_prob: float = _f(1.0, "probability of applying mixup/cutmix to a batch", role="loss")
    mixup_switch_prob: float = _f(0.5, "probability of cutmix instead of mixup when both are on", role="loss")
    mixup_mode: str = _f("batch", "mixup mode: batch, pair or elem", choices=("batch", "pair", "elem"), role="loss")
    mixup_off_epoch: int = _f(200, "turn mixup off from this epoch on (0: keep it on for all epochs, as the published "
                              "runs did)", role="loss")
    smoothing: float = _f(0.1, "label smoothing", role="loss")
    tet: bool = _f(False, "TET loss: average the loss over per-time-step logits", role="loss", kind="constructor")
    tet_means: float = _f(1.0, "TET's regulariser: the value each per-step output is pulled to", role="loss")
    tet_lamb: float = _f(0.0, "TET's regulariser weight: (1 - lamb) mean_t CE + lamb MSE(outputs, means); 0: off",
                         role="loss")
    bce_loss: bool = _f(False, "binary cross-entropy instead of cross-entropy (timm's BinaryCrossEntropy)", role="loss")
    bce_target_thresh: Optional[float] = _f(None, "with bce_loss: targets above this become 1 (none: soft targets)",
                                            role="loss")
    # --- distillation (DeiT's, as SDT-V2's fine-tune uses it): a model with a kd head learns a teacher's predictions
    teacher: Optional[str] = _f(None, "the teacher, a timm model name (caformer_b36.sail_in22k_ft_in1k in SDT-V2's "
                                "fine-tune); its weights come from teacher_checkpoint, nothing is downloaded", role="loss")
    teacher_checkpoint: Optional[str] = _f(None, "the teacher's weights: a file timm reads for that model (its "
                                           "original's .pth, a timm .pth or .safetensors)", role="loss")
    distillation_type: str = _f("hard", "hard: the kd head learns the teacher's top class (cross-entropy); soft: its "
                                "distribution at distillation_tau (KL)", choices=("hard", "soft"), role="loss")
    distillation_alpha: float = _f(0.5, "loss = (1 - alpha) label loss of the head + alpha distillation loss of the kd head",
                                   role="loss")
    distillation_tau: float = _f(1.0, "the softmax temperature of soft distillation", role="loss")
    # --- model
    model: str = _f("sdt", "the model: a registered name (spikedriven models lists each with its settings)", role="model")
    model_args: dict = _f({}, "the model's settings by name (depth=4 embed_dim=384); each is also a top-level key "
                          "and a flag (--depth 4), the model's defaults otherwise", role="model")
    models: dict = _f({}, "settings per model, for a config several models share (a study's --models): "
                      "{NAME: {setting: value}}; the run's model takes its entry, under model_args (YAML only)",
                      role="model", kind="per_choice")
    time_steps: int = _f(4, "time steps T", role="model", kind="constructor")
    # --- neuron (settings a neuron does not take must stay at these defaults; spikedriven neurons lists each one's)
    spike_mode: str = _f("lif", "neuron model: a registered name (lif, lif_soft, plif, if, if_soft, if_learnable, "
                         "multispike, or one of --plugins)", role="neuron")
    v_threshold: float = _f(1.0, "firing threshold u_th of every neuron but the attention one",
                            role="neuron", kind="neuron_setting")
    v_reset: Optional[float] = _f(None, "hard-reset potential (none: 0 for lif/if; soft reset for if_soft)",
                                  role="neuron", kind="neuron_setting")
    tau: float = _f(2.0, "LIF membrane time constant", role="neuron", kind="neuron_setting")
    surrogate: str = _f("sigmoid", "surrogate gradient: sigmoid, atan, piecewise_quadratic, erf, soft_sign, rect",
                        role="neuron", kind="neuron_setting")
    surrogate_alpha: Optional[float] = _f(None, "surrogate sharpness alpha (none: the surrogate's own, sigmoid 4, atan 2, "
                                          "as SpikingJelly's)", role="neuron", kind="neuron_setting")
    detach_reset: bool = _f(True, "no gradient through the reset", role="neuron", kind="neuron_setting")
    neuron_args: dict = _f({}, "further settings of the neuron by name (levels=8 for multispike); each neuron's "
                           "own settings are also flags (--levels 8)", role="neuron")
    neurons: dict = _f({}, "settings per neuron, for a config several neurons share (a study's --modes): "
                       "{MODE: {setting: value}}; the run's neuron takes its entry, under neuron_args (YAML only)",
                       role="neuron", kind="per_choice")
    plugins: list[str] = _f([], "Python files or modules that register neurons, encodings or models of your own "
                            "(recorded: evaluation and resuming load them again)", role="runtime")
    # --- input encoding (spikedriven encodings lists each one's settings)
    encoding: str = _f("direct", "input encoding: a registered name (direct: the analogue image, repeated over T; "
                       "simple_poisson, the study's; rate; latency; or one of --plugins)", role="input")
    encoding_args: dict = _f({}, "the encoding's settings by name (gain=2 for rate, threshold=0.1 for latency)",
                             role="input")
    encodings: dict = _f({}, "settings per encoding, for a config several encodings share (a study's --vary "
                         "encoding=...): {NAME: {setting: value}}; the run's encoding takes its entry, under "
                         "encoding_args (YAML only)", role="input", kind="per_choice")
    encode_eval: bool = _f(True, "encode evaluation batches as training ones (with a fixed epoch key: every evaluation "
                           "draws the same spikes); false: training batches only, evaluation on the analogue image, "
                           "as the study did", role="input")
    # --- optimisation
    opt: str = _f("adamw", "timm optimizer name", role="optimisation")
    lr: float = _f(3e-4, "peak learning rate", role="optimisation")
    weight_decay: float = _f(0.06, "weight decay (not applied to biases and norm weights)", role="optimisation")
    opt_betas: Optional[list] = _f([0.9, 0.999], "Adam betas (none: the optimizer's own)", role="optimisation")
    opt_eps: Optional[float] = _f(1e-8, "optimizer epsilon (none: the optimizer's own, e.g. LAMB's 1e-6 in the "
                                  "original's configs that say opt_eps: None)", role="optimisation")
    opt_kwargs: dict = _f({}, "further keyword arguments of the timm optimizer, as timm's --opt-kwargs "
                          "(trust_clip=true for LAMB, as SDT-V2's and -V3's recipes use it)", role="optimisation")
    clip_grad: Optional[float] = _f(None, "clip the gradient norm to this value (none: off)", role="optimisation")
    sched: str = _f("cosine", "timm scheduler name", role="schedule")
    epochs: int = _f(300, "epochs of the schedule (cooldown comes on top)", role="schedule", kind="length")
    warmup_epochs: int = _f(20, "linear warm-up epochs", role="schedule")
    warmup_lr: float = _f(1e-6, "learning rate at epoch 0", role="schedule")
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine and during cooldown", role="schedule")
    cooldown_epochs: int = _f(10, "epochs at min_lr after the schedule", role="schedule", kind="length")
    warmup_prefix: bool = _f(False, "the cosine starts after the warm-up and spans the remaining epochs, as SDT-V2's and "
                             "-V3's recipes (timm's --warmup-prefix, with epochs counting the warm-up); false: the "
                             "cosine runs on the absolute epoch, as the SDT study's", role="schedule")
    sched_on_updates: bool = _f(False, "set the learning rate at every step from the fractional epoch, as SDT-V2's and "
                                "-V3's recipes (timm's --sched-on-updates); false: once per epoch", role="schedule")
    # --- run
    batch_size: int = _f(64, "training batch size (per process)", role="optimisation")
    val_batch_size: int = _f(64, "evaluation batch size", role="runtime")
    seed: int = _f(42, "random seed", role="optimisation")
    amp: str = _f("none", "mixed precision: none, bf16 or fp16", choices=AMP_MODES, role="optimisation")
    channels_last: Optional[bool] = _f(None, "channels-last memory format: true, false, or auto (also none): on for CUDA",
                                       auto=True, role="runtime")
    backward_memory: str = _f("auto", "what training keeps for backward, all with the same gradients: full; lean (bool spikes, "
                              "batch norm + neuron recomputed: 38 % of full's activation memory); min (lean, and the "
                              "convolutions recomputed from their spikes: 13 %, one more forward convolution per layer); "
                              "auto (lean on GPUs, full on CPU)", choices=MEMORY_MODES, role="runtime")
    compile: Optional[bool] = _f(None, "torch.compile the model: true, false, or auto (also none): on for a "
                                 "single-process CUDA run, off on CPU, under torchrun and with backward_memory min",
                                 auto=True, role="runtime")
    compile_mode: str = _f("reduce-overhead", "torch.compile mode; reduce-overhead adds CUDA graphs on GPUs "
                           "(measured fastest at the study's batch 64) and equals default on CPU",
                           choices=COMPILE_MODES, role="runtime")
    fused_optimizer: Optional[bool] = _f(None, "the optimizer step as one fused kernel (torch's fused Adam / AdamW, "
                                         "same update up to float rounding): true, false, or auto (also none): on "
                                         "for CUDA with adam or adamw, off on CPU (the tested reference)",
                                         auto=True, role="runtime")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", role="runtime")
    output: Optional[str] = _f(None, "run folder (default: output/train/<timestamp>-<dataset>-<mode>-uth<v>-seed<s>)",
                               role="reporting")
    nonfinite: str = _f("stop", "on a non-finite loss: stop the run, or skip the step", choices=NONFINITE_POLICIES,
                        role="runtime")
    log_interval: int = _f(50, "log every N steps", role="reporting")
    log_wandb: bool = _f(False, "also log the epoch scalars to Weights & Biases (pip install 'spikedriven[wandb]'; "
                         "project: $WANDB_PROJECT or spikedriven; WANDB_MODE=offline without internet)", role="reporting")

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
        """Check every setting (one sentence for the first bad one, in field order within each group) and fill
        in what is resolved from others (the dataset's normalisation, the plugins' paths)."""
        from ..data import dataset_def  # here: the data package reads this module

        definition = dataset_def(self.dataset)
        if self.mean is None:  # resolved now, so that config.yaml and checkpoints record the values used
            self.mean = list(definition.mean)
        if self.std is None:
            self.std = list(definition.std)
        self._check_choices()
        self._check_sizes_and_schedule()
        self._check_normalisation_and_optimiser(definition)
        self._check_augmentation()
        self._check_recipe_and_run()
        self.plugins = [plugin_key(p) for p in self.plugins]  # recorded as absolute paths: found from any folder
        self.neuron_spec()  # neuron settings validate themselves (this loads the plugins)
        self._check_neurons()
        self._check_encodings(definition)
        self._check_models()
        self._check_distillation()
        return self

    def _check_choices(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}"
                                  f"{did_you_mean(value, choices)}")

    def _check_sizes_and_schedule(self) -> None:
        for name in ("num_classes", "img_size", "in_chans", "time_steps", "batch_size", "val_batch_size"):
            _need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _need(self.workers is None or self.workers >= 0, f"workers must be >= 0 or auto, got {self.workers}")
        _need(self.eval_img_size is None or self.eval_img_size >= 1, f"eval_img_size must be >= 1, got {self.eval_img_size}")
        _need(0 <= self.tet_lamb <= 1, f"tet_lamb must lie in [0, 1], got {self.tet_lamb}")
        _need(self.bce_target_thresh is None or 0 <= self.bce_target_thresh <= 1,
              f"bce_target_thresh must lie in [0, 1] or be none, got {self.bce_target_thresh}")
        for name in ("val_size", "epochs", "warmup_epochs", "cooldown_epochs", "mixup_off_epoch", "aug_repeats"):
            _need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _need(self.epochs + self.cooldown_epochs >= 1, "epochs + cooldown_epochs must be at least 1")
        _need(not self.warmup_prefix or self.warmup_epochs < self.epochs,
              f"warmup_prefix: the cosine runs over the epochs after the warm-up, and warmup_epochs "
              f"{self.warmup_epochs} leaves none of epochs {self.epochs}")

    def _check_normalisation_and_optimiser(self, definition) -> None:
        _need(len(self.mean) == self.in_chans and len(self.std) == self.in_chans,
              f"mean and std need {self.in_chans} values (in_chans), got {len(self.mean)} and {len(self.std)}")
        _need(all(s > 0 for s in self.std), "every std value must be > 0")
        _need(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1, f"scale must be [low, high] within (0, 1], got {self.scale}")
        _need(len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1], f"ratio must be [low, high] with 0 < low <= high, got {self.ratio}")
        _need(self.opt_betas is None or (len(self.opt_betas) == 2 and all(0 <= b < 1 for b in self.opt_betas)),
              f"opt_betas must be two numbers in [0, 1) or none, got {self.opt_betas}")
        _need(self.opt_eps is None or self.opt_eps > 0, f"opt_eps must be > 0 or none, got {self.opt_eps}")
        _need(not self.fused_optimizer or self.opt in FUSED_OPTIMIZERS,
              f"fused_optimizer: true needs opt {' or '.join(FUSED_OPTIMIZERS)} (torch's fused kernels); "
              f"opt {self.opt} has none, so leave fused_optimizer at auto or false")
        _need(0 <= self.reprob <= 1, f"reprob must lie in [0, 1], got {self.reprob}")
        _need(self.recount >= 1, f"recount must be >= 1, got {self.recount}")
        _need(not self.reprob or not definition.frames,
              f"random erasing (reprob) works on images and {self.dataset} serves event frames; set reprob 0")

    def _check_augmentation(self) -> None:
        if self.aa_ops is None:
            return
        from timm.data.auto_augment import NAME_TO_OP

        unknown = [op for op in self.aa_ops if op not in NAME_TO_OP]
        _need(not unknown, f"aa_ops: {', '.join(unknown)} is not a timm RandAugment op; the ops are "
                           f"{', '.join(sorted(NAME_TO_OP))}")
        _need(bool(self.aa_ops) and str(self.aa).startswith("rand"),
              f"aa_ops picks RandAugment's ops: it needs at least one op and a RandAugment aa (rand-...), "
              f"got aa {self.aa!r}")

    def _check_recipe_and_run(self) -> None:
        for name in ("hflip", "mixup_prob", "mixup_switch_prob", "smoothing"):
            _need(0 <= getattr(self, name) <= 1, f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("mixup", "cutmix", "color_jitter", "weight_decay", "warmup_lr", "min_lr"):
            _need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _need(self.batch_size % 2 == 0 or (self.mixup == 0 and self.cutmix == 0) or self.mixup_mode == "elem",
              f"mixup needs an even batch_size, got {self.batch_size}")
        _need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _need(0 < self.crop_pct <= 1, f"crop_pct must lie in (0, 1], got {self.crop_pct}")
        _need(self.clip_grad is None or self.clip_grad > 0, f"clip_grad must be > 0 or none, got {self.clip_grad}")
        _need(self.log_interval >= 1, f"log_interval must be >= 1, got {self.log_interval}")
        _need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
              f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

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


# ------------------------------------------------------------ the lists derived from the roles


def fields_of(*roles: str, kind: Optional[str] = None) -> tuple[str, ...]:
    """The fields of ``roles``, in the config's order; with ``kind``, only those of that kind."""
    unknown = [name for name in roles if name not in ROLES] + ([kind] if kind is not None and kind not in KINDS else [])
    if unknown:
        raise ValueError(f"no role or kind {', '.join(unknown)}: the roles are {', '.join(ROLES)}, the kinds "
                         f"{', '.join(KINDS)}")
    return tuple(name for name, f in FIELDS.items()
                 if f.metadata["role"] in roles and (kind is None or f.metadata.get("kind") == kind))


def _kind(name: str) -> Optional[str]:
    return FIELDS[name].metadata.get("kind")


# The fields every model takes as constructor arguments, under the model's own names (timm's where timm has
# one), in the order of the roles (the order a checkpoint's and an export's model_args record them in); a
# model's own settings (depth, embed_dim, ...) are its architecture's (model_args), and the study's spellings
# of them (layer, dim, in_channels) are read as those (original_keys).
MODEL_FIELDS = tuple(name for role in ROLES for name in fields_of(role, kind="constructor"))
# The neuron settings with config fields of their own (the study's and SpikingJelly's names);
# any other setting of a neuron goes through neuron_args.
NEURON_FIELDS = fields_of("neuron", kind="neuron_setting")
# Every field that describes the neuron: two configs whose neurons are the same differ in none of them.
NEURON_SETTINGS = fields_of("neuron")
# How a run is carried out, not what it computes: a resume may change these, a study's stale check ignores them.
RUNTIME_SETTINGS = fields_of("runtime", "reporting")
# The length of the schedule: a resume may change it (the schedule is re-planned); a study may not.
SCHEDULE_LENGTH = fields_of("schedule", kind="length")


def _network_settings() -> tuple[str, ...]:
    """The settings that define the trained network: the model, what every model is built with, the neuron, the
    input; in that order (the order evaluation lists the settings that contradict a checkpoint in). Not the
    settings per model, neuron or encoding (only the run's own entry counts, in its *_args), nor model_args,
    whose settings are compared one by one, by name."""
    def own(role: str) -> list:
        return [name for name in fields_of(role)
                if _kind(name) != "per_choice" and name not in MODEL_FIELDS and name != "model_args"]

    return (*own("model"), *MODEL_FIELDS, *own("neuron"), *own("input"))


MODEL_SETTINGS = _network_settings()
