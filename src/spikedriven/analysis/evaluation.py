"""Evaluate a checkpoint: accuracy, firing rates, SOPs and energy, written to a folder.

Neuron and model settings come from the checkpoint. A flag that contradicts
them is an error unless ``override`` is set, so an analysis never silently
runs other thresholds than the training used. Checkpoints of the original
code carry no resolved config: their settings come from the YAML and flags,
checked against what their pickled arguments do record.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..engine import checkpoint as ckpt_io
from . import analyze, resolve_energy_models
from .membrane import MembraneRecorder, format_membrane, write_membrane
from .speed import format_speed, measure_speed
from ..config import MODEL_SETTINGS, Config, coerce, from_mapping, load_config, recorded_config
from ..config.original_keys import fold_model_settings
from ..data import build_datasets, build_eval_loader, build_test_dataset
from ..encodings import build_encoder
from ..engine.distributed import resolve_device
from ..runtime import Runtime
from ..engine.loop import AMP_DTYPES, FP16_NEEDS_CUDA
from ..errors import CheckpointError, ConfigError
from ..models import architecture_of, build_model
from .reports import format_summary, write_evaluation

log = logging.getLogger("spikedriven")

# MODEL_SETTINGS, the settings that define the trained network (changing one changes what is analysed, and so
# does each of the model's own settings, in model_args), are derived from the fields' roles (config.schema).


def _defining(values: Mapping[str, Any]) -> dict:
    """The settings that define a network, the model's own (its model_args) spelled out by name."""
    out = {key: values[key] for key in MODEL_SETTINGS if key in values}
    out.update(values.get("model_args") or {})
    return out


def _settings_of(cfg: Config) -> dict:
    """A config's defining settings, with every one of its model's settings resolved."""
    return _defining({**cfg.to_dict(), "model_args": cfg.model_settings()})


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) != float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    return a != b


def _conflicts(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[dict]:
    """Each defining setting (``_defining``'s) in which ``wanted`` differs from ``recorded``."""
    return [
        {"setting": key, "checkpoint": recorded[key], "evaluated_with": value}
        for key, value in wanted.items()
        if key in recorded and _differs(recorded[key], value)
    ]


def _listed(conflicts: list[dict]) -> str:
    return "; ".join(f"{c['setting']}={c['evaluated_with']!r} (checkpoint: {c['checkpoint']!r})" for c in conflicts)


def resolve_eval_config(
    ckpt: Mapping, config_path: Optional[str], overrides: Mapping[str, Any], override: bool
) -> tuple[Config, list[dict]]:
    """The config to evaluate with, and the settings overridden against the checkpoint."""
    overrides = {key: coerce(key, value, "command line") for key, value in fold_model_settings(overrides).items()}
    if "config" in ckpt and not ckpt_io.is_original_format(ckpt):
        recorded = recorded_config(ckpt["config"], "checkpoint config", overrides)
        wanted = from_mapping(overrides, source="command line", base=recorded)
        given = _defining(overrides)  # the settings the flags name, compared as read (a flag's "2" is 2)
        conflicts = _conflicts(_settings_of(recorded), {k: v for k, v in _settings_of(wanted).items() if k in given})
        if conflicts and not override:
            raise ConfigError(
                f"flags contradict the checkpoint's settings: {_listed(conflicts)}; "
                "drop them, or add --override to analyse with other settings on purpose"
            )
        return wanted, conflicts
    cfg = load_config(config_path, overrides)
    recorded = ckpt_io.recorded_model_args(ckpt, architecture_of(cfg.model))
    conflicts = _conflicts(recorded, _settings_of(cfg))
    if conflicts and not override:
        raise ConfigError(
            f"settings contradict the checkpoint's recorded arguments: {_listed(conflicts)}; "
            "fix the config or flags, or add --override"
        )
    return cfg, conflicts


def default_output(checkpoint: Path, overridden: Optional[list[dict]] = None, eval_size: Optional[int] = None) -> Path:
    """``eval_<checkpoint name>`` beside it; an evaluation with overridden settings gets a folder
    named by them (``eval_last-override-spike_mode-lif``), so it never replaces the real one, and
    so does one at another image size (``eval_best-288px``)."""
    name = f"eval_{checkpoint.name.split('.')[0]}" + (f"-{eval_size}px" if eval_size else "")
    for c in overridden or []:
        value = c["evaluated_with"]
        value = " ".join(f"{v:g}" for v in value) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)
        name += f"-override-{c['setting']}-{re.sub(r'[^A-Za-z0-9._]+', '_', value)}"
    return checkpoint.parent / name


def pick_checkpoint(path: str | Path) -> tuple[Path, str]:
    """The checkpoint to evaluate for ``path`` (a run folder means its final model), and a note saying so."""
    path = Path(path)
    if not path.is_dir():
        return path, ""
    for name, note in (("last.pth.tar", " (the run's final model; give best.pth.tar for its best epoch)"),
                       ("best.pth.tar", " (the run folder has no last.pth.tar)")):
        if (path / name).is_file():
            return path / name, note
    raise CheckpointError(f"no last.pth.tar or best.pth.tar in {path}; give a checkpoint file or a run folder")


def finished_epoch(ckpt: Mapping) -> Optional[int]:
    """The last epoch a checkpoint holds whole, counted from 0 as in summary.csv and results.json."""
    if "epoch" not in ckpt:
        return None
    epoch = int(ckpt["epoch"])
    if ckpt_io.is_original_format(ckpt):
        # timm's train.py saves the epoch just finished since its checkpoint version 2, the count before that
        return epoch if int(ckpt.get("version", 1)) > 1 else epoch - 1
    return epoch - 1 if epoch > 0 else None


def evaluate_checkpoint(
    checkpoint: str | Path,
    config_path: Optional[str] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    *,
    override: bool = False,
    split: str = "test",
    output: Optional[str | Path] = None,
    energy: Sequence[str] = ("sdt",),
    energy_constants: Optional[Mapping[str, float]] = None,
    use_ema: bool = False,
    speed: bool = False,
    speed_repeats: int = 10,
    membrane: bool = False,
) -> tuple[dict, dict[str, Path]]:
    """Analyse ``checkpoint`` on the test set (or the held-out ``val`` split); write the report folder.

    ``energy``: the energy models to price the counted operations with (``sdt`` is always
    computed as well: it gives the per-layer rows every report shows); ``energy_constants``:
    their constants in pJ over the defaults. ``speed``: also time inference, fused path and
    per-step loop, at batch 1 and the evaluation batch. ``membrane``: also record the membrane
    potential of every neuron layer (in the per-step loop, which exposes it).
    """
    models = resolve_energy_models(list(dict.fromkeys(["sdt", *energy])), energy_constants)  # before anything is read: a typo fails at once
    sdt_constants = resolve_energy_models(["sdt"], {k: v for k, v in (energy_constants or {}).items()
                                                    if k in ("e_mac", "e_ac")})[0][1]
    checkpoint = Path(checkpoint)
    ckpt = ckpt_io.read_checkpoint(checkpoint)
    cfg, overridden = resolve_eval_config(ckpt, config_path, overrides or {}, override)
    device = resolve_device(cfg.device)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(FP16_NEEDS_CUDA)
    if split == "val" and not cfg.val_size:
        raise ConfigError("--split val needs the run's held-out split (val_size > 0 in its config)")
    dataset = build_datasets(cfg).eval if split == "val" else build_test_dataset(cfg)
    loader = build_eval_loader(cfg, dataset, device=device, workers=Runtime.resolve(cfg, device).workers)

    model = build_model(cfg)
    ckpt_io.load_into(model, ckpt, checkpoint, use_ema=use_ema, check_settings=not overridden)
    model.to(device)
    recorder = MembraneRecorder(model) if membrane else None
    encoder = build_encoder(cfg, training=False)  # the checkpoint's recorded encoding, as its training applied it
    result = analyze(model, loader, device, amp=cfg.amp, e_mac=sdt_constants["e_mac"] * 1e-12,
                     e_ac=sdt_constants["e_ac"] * 1e-12, energy_models=models,
                     recorders=[recorder] if recorder else (), encoder=encoder)
    if encoder is None and cfg.encoding != "direct":
        result["input"]["line"] += (f"; the run's {cfg.encoding} encoding is applied in training only "
                                    "(encode_eval false)")
    if recorder is not None:
        result["membrane"] = {"layers": recorder.summary(), "skipped": dict(recorder.skipped)}
    if speed:
        batch = next(iter(loader))
        example = batch[0] if encoder is None else encoder(batch[0].to(device), batch[2] if len(batch) > 2 else None)
        result["speed"] = measure_speed(model, example, device, AMP_DTYPES[cfg.amp],
                                        batch_sizes=(1, cfg.val_batch_size), repeats=speed_repeats)
    result["split"] = split
    result["overridden_settings"] = overridden
    result["checkpoint_format"] = "original" if ckpt_io.is_original_format(ckpt) else "spikedriven"
    result["checkpoint_epoch"] = finished_epoch(ckpt)
    if ckpt.get("step"):
        result["checkpoint_step"] = int(ckpt["step"])  # saved inside the epoch after checkpoint_epoch
    other_size = cfg.eval_img_size if cfg.eval_img_size not in (None, cfg.img_size) else None
    folder = Path(output) if output else default_output(checkpoint, overridden, other_size)
    try:
        # the model's settings as resolved (its defaults filled in): what was evaluated, in full
        config = {**cfg.to_dict(), "model_args": cfg.model_settings()}
        files = write_evaluation(folder, result, config=config, checkpoint=checkpoint)
        if recorder is not None:
            files.update({f"membrane_{k}": v for k, v in write_membrane(folder, recorder).items()})
    except OSError as e:
        raise ConfigError(f"cannot write the evaluation to {folder} ({e.strerror or e})") from None
    return result, files


def print_report(result: dict, files: Mapping[str, Path]) -> None:
    print(format_summary(result))
    if "membrane" in result:
        print(format_membrane(result["membrane"]["layers"], result["membrane"]["skipped"]))
    if "speed" in result:
        print(format_speed(result["speed"]))
    if result.get("overridden_settings"):
        print("settings overridden against the checkpoint: " + _listed(result["overridden_settings"]))
    folder = next(iter(files.values())).parent
    print(f"written to {folder}: " + ", ".join(p.name for p in files.values()))

