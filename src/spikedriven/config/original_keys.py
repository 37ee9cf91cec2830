"""The config vocabulary of the original SDT code and of the study's code, read into ours.

Their YAML files use timm ``train.py``'s keys, some in two spellings (``model-ema`` /
``model_ema``), many of them plumbing or settings that change nothing at the values the files
give. So that every one of those files runs as it is, each key that is not a field of ours is:

* a spelling of one of ours (``TET``, ``channels-last``, ``mlp-ratio``): read as that field;
* inert: it changes nothing at the value given (``drop_path``, which the original builds but
  never applies; ``model_ema: false``; ``resplit: false``): listed once in a warning line;
* refused: it would change the run and we do not implement it (``model_ema: true``,
  ``use_conv_as_linear: false``): named in the error, with what to do instead.

The facts come from the original's configs and code (SPEC section 11).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

# The original's spellings of our fields that hyphen-to-underscore does not give. The model's sizes are
# named as the model names them (timm's depth, embed_dim, in_chans); the original's names are read as those.
SPELLINGS = {"TET": "tet", "TET_means": "tet_means", "TET_lamb": "tet_lamb",
             "layer": "depth", "dim": "embed_dim", "in_channels": "in_chans",
             "time_step": "time_steps",  # Spikformer's train.py
             "nb_classes": "num_classes"}  # SDT-V2's and -V3's main_finetune.py

# False also stands for 0 and 0.0 (equal to it, and so one member of a set; 0.0 is _off's own case too)
FALSE_WORDS = {False, None, "", "false", "False", "no", "none", "None", "0"}


def _is_in(value, words) -> bool:
    try:
        return value in words
    except TypeError:  # a list or mapping where a scalar belongs: not one of the accepted values
        return False


def _off(value, values) -> bool:
    return _is_in(value, FALSE_WORDS) or (isinstance(value, float) and value == 0.0)


def _any(value, values) -> bool:
    return True


def _at(*accepted) -> Callable:
    def test(value, values) -> bool:
        return _is_in(value, accepted) or (isinstance(value, str) and value.strip() in accepted)
    return test


def _when_off(other: str) -> Callable:
    """Inert while the key ``other`` (in the original's vocabulary, normalised) is off."""
    def test(value, values) -> bool:
        return _off(values.get(other), values)
    return test


def _unless(field: str, *uses) -> Callable:
    """Inert unless our field ``field`` takes one of ``uses`` (a schedule key under another schedule)."""
    def test(value, values) -> bool:
        return str(values.get(field, "")).lower() not in uses
    return test


@dataclass(frozen=True)
class Foreign:
    """A key of the original's vocabulary that is not ours: when it changes nothing, and why."""
    inert: Callable[[Any, Mapping], bool]
    why: str  # why it changes nothing at such values
    refusal: str = ""  # what to say when it would change the run

    def refused(self, key: str, value: Any) -> str:
        what = self.refusal or "is not implemented"
        return f"{key}: {value!r} {what}"


_PLUMBING = "run plumbing that spikedriven does its own way"
_EMA_OFF = "without effect while model_ema is off"

FOREIGN: dict[str, Foreign] = {
    # --- model
    "drop_path": Foreign(_any, "built by the original model but never applied in its forward"),
    "drop": Foreign(_any, "unused by the original model"),
    "drop_connect": Foreign(_any, "unused by the original model"),
    "drop_block": Foreign(_any, "unused by the original model"),
    "patch_size": Foreign(_any, "unused: the SPS pools instead of cutting patches"),
    "use_conv_as_linear": Foreign(_at(True, "true", "True"), "the original's only implementation",
                                  "is not implemented (only convolutions as linear layers, use_conv_as_linear: true)"),
    "linear_prob": Foreign(_off, "off", "is not implemented (linear probing)"),
    "init_alif": Foreign(_off, "off", "is not implemented"),
    "model_ema": Foreign(_off, "off", "is not implemented (an EMA of the weights); drop the key or set it false"),
    "model_ema_decay": Foreign(_when_off("model_ema"), _EMA_OFF),
    "model_ema_force_cpu": Foreign(_when_off("model_ema"), _EMA_OFF),
    "bn_eps": Foreign(_at(None), "batch norm's own default"),
    "bn_momentum": Foreign(_at(None), "batch norm's own default"),
    "bn_tf": Foreign(_off, "off"),
    "gp": Foreign(_at(None), "the model's own pooling"),
    "input_size": Foreign(_at(None), "in_chans and img_size give it", "is not read; give in_chans and img_size"),
    "split_bn": Foreign(_off, "off", "is not implemented (split batch norm for augmentation splits)"),
    "sync_bn": Foreign(_off, "off", "is not implemented (synchronised batch norm)"),
    "dist_bn": Foreign(_at("", None), "off",
                       "is not implemented (batch-norm statistics shared between processes after each epoch)"),
    # --- data and augmentation
    "train_interpolation": Foreign(lambda v, values: v == values.get("interpolation", "bicubic"),
                                   "the same as interpolation, which spikedriven uses for training and evaluation",
                                   "differs from interpolation, and spikedriven uses one interpolation for both"),
    "no_aug": Foreign(_off, "off", "is not implemented (training without augmentation: set aa none, mixup 0, "
                                   "hflip 0)"),
    "vflip": Foreign(_off, "off", "is not implemented (vertical flips)"),
    # reprob, remode, recount are fields; resplit (timm's num_splits 2: the first half of each batch left
    # unerased, the clean half of augmentation splits) changes a run only with random erasing on
    "resplit": Foreign(lambda v, values: _off(v, values) or _off(values.get("reprob"), values),
                       "off, or without effect while reprob is 0",
                       "is not implemented (random erasing of the second half of each batch only)"),
    "aug_splits": Foreign(_off, "off", "is not implemented (augmentation splits)"),
    "jsd": Foreign(_off, "off", "is not implemented (the Jensen-Shannon consistency loss)"),
    "cutmix_minmax": Foreign(_at(None), "off", "is not implemented (cutmix box bounds)"),
    "epoch_repeats": Foreign(_off, "off", "is not implemented (repeating each epoch)"),
    "dvs_aug": Foreign(_off, "off", "is not implemented (the original's DVS cutout)"),
    "dvs_trival_aug": Foreign(_off, "off", "is not implemented (the original's DVS trivial augment)"),
    "train_split_path": Foreign(_at(None, ""), "off", "is not implemented"),
    "train_split": Foreign(_at("train"), "the training folder", "is not read; the training images are under train/"),
    "val_split": Foreign(_at("validation", "val", "test"), "the evaluation folder",
                         "is not read; the evaluation images are under val/"),
    # --- optimisation and schedule
    "clip_mode": Foreign(_at("norm"), "clip_grad clips the gradient norm", "is not implemented (only clip_mode: norm)"),
    "momentum": Foreign(lambda v, values: v == 0.9 or _unless("opt", "sgd", "nesterov", "momentum", "rmsprop",
                                                              "rmsproptf", "lars", "nlars")(v, values),
                        "timm's default, or the optimizer takes none", "is not implemented (an SGD momentum)"),
    "lr_noise": Foreign(_at(None), "off", "is not implemented (learning-rate noise)"),
    "lr_noise_pct": Foreign(_when_off("lr_noise"), "without effect while lr_noise is off"),
    "lr_noise_std": Foreign(_when_off("lr_noise"), "without effect while lr_noise is off"),
    "lr_cycle_limit": Foreign(_at(1), "one cycle, timm's default", "is not implemented (cosine restarts)"),
    "lr_cycle_mul": Foreign(_at(1, 1.0), "one cycle, timm's default", "is not implemented (cosine restarts)"),
    "decay_epochs": Foreign(_unless("sched", "step", "multistep"), "used by step schedules only",
                            "is not implemented (step schedules' decay)"),
    "decay_rate": Foreign(_unless("sched", "step", "multistep", "plateau"), "used by step schedules only",
                          "is not implemented (step schedules' decay)"),
    "patience_epochs": Foreign(_unless("sched", "plateau"), "used by the plateau schedule only",
                               "is not implemented (the plateau schedule)"),
    # --- run plumbing
    "pretrained": Foreign(_off, "off", "is not implemented (no weights are downloaded); start from a checkpoint "
                                       "with --resume CKPT --no-resume-opt"),
    "initial_checkpoint": Foreign(_at("", None), "none",
                                  "is not read from a config file; start from it with --resume CKPT --no-resume-opt"),
    "resume": Foreign(_at("", None), "none", "is not read from a config file; give --resume on the command line"),
    "no_resume_opt": Foreign(_off, "off", "is not read from a config file; give --no-resume-opt on the command line"),
    "start_epoch": Foreign(_at(None), "none", "is not implemented; a resumed run continues where it stopped"),
    "torchscript": Foreign(_off, "off", "is not implemented; compile: true uses torch.compile"),
    "tta": Foreign(_off, "off", "is not implemented (test-time augmentation)"),
    "save_images": Foreign(_off, "off", "is not implemented"),
    "native_amp": Foreign(_off, "off", "is not read; give amp: fp16"),
    "apex_amp": Foreign(_off, "off", "is not implemented (NVIDIA apex); give amp: fp16 or bf16"),
    "eval_metric": Foreign(_at("top1"), "top-1 picks the best checkpoint, as in spikedriven",
                           "is not implemented (the best checkpoint is picked by top-1)"),
    "local_rank": Foreign(_any, "set by the launcher; spikedriven reads torchrun's environment"),
    "pin_mem": Foreign(_any, _PLUMBING + " (pinned memory on CUDA)"),
    "no_prefetcher": Foreign(_any, _PLUMBING),
    "use_multi_epochs_loader": Foreign(_any, _PLUMBING + " (persistent workers)"),
    "recovery_interval": Foreign(_any, "spikedriven saves a resumable checkpoint every epoch and on a stop signal"),
    "checkpoint_hist": Foreign(_any, "spikedriven keeps last.pth.tar and best.pth.tar"),
}

# The study's encoder_type, read as our encoding (SPEC 13.2). Its poisson (a copy of a spike-interval encoder)
# could not run in its training script, so no run of the study used it.
STUDY_ENCODERS = {None: "direct", "none": "direct", "simple_poisson": "simple_poisson"}
# Our encoding is applied to evaluation batches as well (encode_eval true): the study's evaluation on the analogue
# image is what made its encoded runs test far below direct input, so the sound reading is the default, and the
# note says how to reproduce the study's.
STUDY_EVAL_NOTE = ("encoder_type simple_poisson is read as encoding simple_poisson, applied to evaluation batches "
                   "too; the study encoded training batches only and evaluated on the analogue image: encode_eval: "
                   "false reproduces that")


def study_encoding(key: str, value: Any) -> tuple[Optional[str], Optional[str]]:
    """The study's ``encoder_type`` as our ``encoding``, or None and the problem to report."""
    word = value.strip() if isinstance(value, str) else value
    if _is_in(word, STUDY_ENCODERS):
        return STUDY_ENCODERS[word], None
    if word == "poisson":
        return None, (f"{key}: 'poisson' is not implemented: the study's spike-interval encoder could not run in its "
                      "training script; give encoding rate (Bernoulli spikes of the intensity) or simple_poisson")
    return None, f"{key}: {value!r} is not one of the study's encoders (none, simple_poisson, poisson)"


# Keys that change our fields rather than being ignored.
#   amp: the original's true / false (timm's native amp, float16).
AMP_WORDS = {True: "fp16", False: "none", "true": "fp16", "false": "none", "True": "fp16", "False": "none"}


def normalised(key: str) -> str:
    key = str(key).replace("-", "_")
    return SPELLINGS.get(key, key)


@dataclass
class Reading:
    """A mapping read from the original's vocabulary: our keys, the inert keys, and the problems."""
    values: dict
    inert: dict  # key as written -> why it changes nothing
    problems: list
    notes: list = field(default_factory=list)  # keys read in a way the original did not run them: what differs
    experiment: Optional[str] = None  # timm's --experiment: the run folder's name under output


def model_setting_names() -> set:
    """The settings of every registered model (depth, embed_dim, ...): top-level keys that belong in model_args."""
    from ..models.registry import setting_names

    return set(setting_names())


def fold_model_settings(values: Mapping[str, Any]) -> dict:
    """``values`` with its top-level model settings (``depth: 2``, the original's ``layer: 2``) moved into
    ``model_args``, where a model's settings live; a setting given both ways with two values is refused."""
    from ..errors import ConfigError

    settings = model_setting_names()
    out, flat = {}, {}
    for key, value in values.items():
        name = normalised(key)
        if name in settings and name not in FOREIGN and not ("-" in str(key) and name in values):
            # (a hyphenated key beside its twin is left for read_vocabulary to call inert)
            if name in flat and flat[name] != value:  # the study's layer beside depth
                raise ConfigError(f"{name} is given twice with different values ({flat[name]!r} and {value!r})")
            flat[name] = value
        else:
            out[key] = value
    if flat:
        given = out.get("model_args") or {}
        if not isinstance(given, Mapping):  # a problem for the field's own reading to name
            return dict(values)
        clash = [k for k in flat if k in given and given[k] != flat[k]]
        if clash:
            raise ConfigError(f"{', '.join(clash)} given both as a key and in model_args, with different values")
        out["model_args"] = {**given, **flat}
    return out


def read_vocabulary(values: Mapping[str, Any], fields) -> Reading:
    """Split ``values`` (keys as a file or the original's flags write them) into our fields, inert keys and
    problems (unknown keys with a suggestion, refused keys with what to do instead). A model's settings
    given as top-level keys (``depth``, the original's ``layer``) are read into ``model_args``."""
    reading = Reading({}, {}, [])
    given, values = values, _folded(values, reading.problems)
    normal = {normalised(k): v for k, v in values.items()}
    for key, value in values.items():
        name = normalised(key)
        if "-" in str(key) and name in given:
            # timm's train.py sets a file's keys as argparse defaults, so a hyphenated key (model-ema,
            # bce-loss) reached no argument there: with both spellings given, the original used the other
            reading.inert[key] = f"the original read {name} ({given[name]!r}) and never a hyphenated key"
        elif name == "encoder_type" and "encoding" in fields:
            _read_study_encoder(reading, key, value, normal)
        elif name in fields:
            _read_field(reading, name, value)
        else:
            _read_other_key(reading, key, name, value, normal, fields)
    if reading.inert and str(reading.values.get("opt", "")).lower() == "lamb" and "opt_eps" not in reading.values:
        # the original left opt_eps unset, which is LAMB's own 1e-6, not spikedriven's default 1e-8
        reading.values["opt_eps"] = None
        reading.inert["opt_eps"] = "not given: LAMB's own 1e-6, as in the original"
    return reading


def _read_study_encoder(reading: Reading, key: str, value: Any, normal: Mapping[str, Any]) -> None:
    """The study's ``encoder_type`` (``key``), read as our ``encoding``."""
    value, problem = study_encoding(key, value)
    if problem:
        reading.problems.append(problem)
        return
    if value == "simple_poisson" and "encode_eval" not in normal:
        reading.notes.append(STUDY_EVAL_NOTE)
    _read_field(reading, "encoding", value)


def _read_field(reading: Reading, name: str, value: Any) -> None:
    """A field of ours (``name``): its value, the original's amp words translated; given twice, one problem."""
    if name == "amp" and (isinstance(value, bool) or _is_in(value, AMP_WORDS)):
        value = AMP_WORDS[value]
    ours = reading.values
    if name in ours and ours[name] != value:
        reading.problems.append(f"{name} is given twice with different values ({ours[name]!r} and {value!r})")
    ours[name] = value


def _read_other_key(reading: Reading, key: str, name: str, value: Any, normal: Mapping[str, Any], fields) -> None:
    """A key that is not a field of ours: timm's experiment, a key of the original's vocabulary (inert or
    refused, by the other keys' values), or an unknown key."""
    if name == "experiment":
        if value not in ("", None):
            reading.experiment = str(value)
        else:
            reading.inert[key] = "none"
    elif name in FOREIGN:
        entry = FOREIGN[name]
        if entry.inert(value, {**normal, **reading.values}):
            reading.inert[key] = entry.why
        else:
            reading.problems.append(entry.refused(key, value))
    else:
        reading.problems.append(f"unknown config key '{key}'{suggestion(key, fields)}")


def _folded(values: Mapping[str, Any], problems: list) -> Mapping[str, Any]:
    from ..errors import ConfigError

    try:
        return fold_model_settings(values)
    except ConfigError as e:
        problems.append(str(e))
        return values


def suggestion(key: str, fields) -> str:
    """A "did you mean" for an unknown key, only when one is close: a typo of a field, or of the
    original's vocabulary."""
    name = normalised(key).lower()
    candidates = {f: f for f in fields}
    candidates.update({k: k for k in model_setting_names()})
    candidates.update({k.lower(): k for k in FOREIGN})
    candidates.update({k.lower(): v for k, v in SPELLINGS.items()})
    guess = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    if guess:
        return f" (did you mean '{candidates[guess[0]]}'?)"
    return " (--help lists the valid keys)"


def inert_line(source: str, inert: Mapping[str, str]) -> str:
    """The warning for keys that change nothing: one line, every key with why."""
    items = "; ".join(f"{k} ({why})" for k, why in inert.items())
    return f"{source}: {len(inert)} key(s) of the original's vocabulary change nothing here and are ignored: {items}"
