"""Shareable weights: a run's model as a timm Hub-style folder.

``export_run`` writes ``model.safetensors`` (the state dict alone: no pickle, so
it can be opened without trusting its author), ``config.json`` in the layout
timm reads for ``hf-hub:`` and ``local-dir:`` models, and a README.md model
card. The model is rebuilt and loaded exactly as ``spikedriven eval`` does, so
an export that succeeds holds weights that fit the recorded settings.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Union

from .engine import checkpoint as ckpt_io
from .atomic import atomic_write
from .config import Config, load_yaml, recorded_config
from .errors import CheckpointError, ConfigError
from .analysis.runs import is_run_folder, read_run
from .analysis.evaluation import finished_epoch, pick_checkpoint
from .models import build_model

__all__ = ["export_run", "load_lines", "WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME"]

WEIGHTS_NAME, CONFIG_NAME, CARD_NAME = "model.safetensors", "config.json", "README.md"

PathLike = Union[str, os.PathLike]


def export_run(run: PathLike, output: PathLike, overwrite: bool = False, use_ema: bool = False) -> list[Path]:
    """Export the model of ``run`` (a run folder: its final model; or a checkpoint file) into ``output``.

    Returns the written paths. An ``output`` holding another export is refused unless ``overwrite``;
    one holding this very export is written again (the card may have newer results).
    """
    from safetensors.torch import save  # here: only exporting needs it

    run, output = Path(run), Path(output)
    if not run.exists():
        raise ConfigError(f"{run} does not exist; give a run folder or a checkpoint file")
    try:
        checkpoint, _ = pick_checkpoint(run)
    except CheckpointError as e:  # a folder without a checkpoint is a wrong argument, not a damaged file
        raise ConfigError(str(e)) from None
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} is a file; give a folder to export into")

    ckpt = ckpt_io.read_checkpoint(checkpoint)
    cfg = _run_config(ckpt, checkpoint)
    model = build_model(cfg)
    ckpt_io.load_into(model, ckpt, checkpoint, use_ema=use_ema)
    # safetensors stores each tensor's own bytes: views of a larger storage must be made whole first
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = save(tensors, metadata={"format": "pt"})
    config = json.dumps(hub_config(cfg, model), indent=2) + "\n"

    written = {output / WEIGHTS_NAME: weights, output / CONFIG_NAME: config.encode()}
    if not overwrite and any(path.is_file() and path.read_bytes() != data for path, data in written.items()):
        raise ConfigError(f"{output} already holds a different export; give another --output or add --overwrite")
    written[output / CARD_NAME] = model_card(cfg, model, ckpt, checkpoint).encode()
    try:
        for path, data in written.items():
            with atomic_write(path, "wb") as f:
                f.write(data)
    except OSError as e:
        raise ConfigError(f"cannot write the export to {output} ({e.strerror or e})") from None
    return list(written)


def _run_config(ckpt: Mapping, checkpoint: Path) -> Config:
    """The config the checkpoint was trained with; the original code's checkpoints record none,
    so theirs come from the run folder's config.yaml."""
    if "config" in ckpt and not ckpt_io.is_original_format(ckpt):
        return recorded_config(ckpt["config"], "checkpoint config")
    yaml_path = checkpoint.parent / "config.yaml"
    if yaml_path.is_file():
        return recorded_config(load_yaml(yaml_path), str(yaml_path))
    raise ConfigError(f"checkpoint {checkpoint} records no config and there is no config.yaml beside it; "
                      "export a run trained with spikedriven")


def hub_config(cfg: Config, model) -> dict:
    """``config.json`` as timm writes it for the Hub: architecture, model_args, pretrained_cfg; the model's
    first layer and classifier are those its timm entry point declares."""
    size = cfg.img_size
    declared = model.pretrained_cfg
    pretrained_cfg: dict[str, Any] = {
        "tag": "spikedriven", "custom_load": False,
        "input_size": [cfg.in_chans, size, size], "fixed_input_size": False,
        "interpolation": cfg.interpolation, "crop_pct": cfg.crop_pct, "crop_mode": "center",
        "mean": list(cfg.mean) if cfg.mean is not None else None,
        "std": list(cfg.std) if cfg.std is not None else None,
        "num_classes": cfg.num_classes, "pool_size": None,
        "first_conv": declared["first_conv"], "classifier": declared["classifier"],
    }
    if cfg.eval_img_size and cfg.eval_img_size != size:
        pretrained_cfg["test_input_size"] = [cfg.in_chans, cfg.eval_img_size, cfg.eval_img_size]
    # a round trip through JSON here, so a setting that would not survive one fails the export, not the load
    model_args = json.loads(json.dumps(cfg.model_kwargs()))
    return {"architecture": cfg.model, "num_classes": cfg.num_classes, "num_features": model.num_features,
            "model_args": model_args, "pretrained_cfg": pretrained_cfg}


def load_lines(folder: PathLike, resolve: bool = True) -> list[str]:
    """The Python lines that load an export with timm, for the card and the command line; the card names
    the folder as a placeholder, since it travels with the files to wherever they are shared."""
    folder = str(Path(folder).resolve()) if resolve else str(folder)
    return [
        "import json, pathlib, timm, spikedriven  # importing spikedriven registers its models with timm",
        f"cfg = json.loads(pathlib.Path({str(Path(folder) / CONFIG_NAME)!r}).read_text())",
        f"model = timm.create_model(cfg['architecture'], pretrained=True, "
        f"pretrained_cfg_overlay=dict(file={str(Path(folder) / WEIGHTS_NAME)!r}), **cfg['model_args']).eval()",
        f"# or: model = timm.create_model({'local-dir:' + folder!r}, pretrained=True).eval()",
    ]


def run_results(folder: Path) -> dict:
    """Final and best top-1 of the run in ``folder``: results.json, else summary.csv; {} if neither."""
    results_path = folder / "results.json"
    if results_path.is_file():
        try:
            data = json.loads(results_path.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and "final_top1" in data:
            return {k: data.get(k) for k in ("final_top1", "final_epoch", "best_top1", "best_epoch", "eval_set")} | {
                "source": "results.json"}
    if is_run_folder(folder):  # read as compare and the study read it
        try:
            curve = read_run(folder)
        except ConfigError:  # a damaged summary.csv: the card says the figures are missing
            return {}
        best_top1, best_epoch = curve.best
        return {"final_top1": curve.final, "final_epoch": curve.epochs[-1], "best_top1": best_top1,
                "best_epoch": best_epoch, "eval_set": None,
                "source": "summary.csv (the run has no results.json: it may not have finished)"}
    return {}


def model_card(cfg: Config, model, ckpt: Mapping, checkpoint: Path) -> str:
    from .models import architecture_of

    arch = architecture_of(cfg.model)
    neuron = cfg.neuron_spec().to_dict()
    neuron_text = ", ".join(f"{k}={v}" for k, v in neuron.items() if k != "mode")
    done = finished_epoch(ckpt)
    results = run_results(checkpoint.parent)
    out = io.StringIO()
    out.write(f"# {arch.title.split(' (')[0]} ({cfg.model}) trained on {cfg.dataset}\n\n")
    out.write("Exported with `spikedriven export`; weights in model.safetensors, timm config in config.json.\n\n")
    out.write("## Training\n\n")
    out.write(f"- dataset: {cfg.dataset} ({cfg.num_classes} classes, {cfg.in_chans}x{cfg.img_size}x{cfg.img_size} input)\n")
    out.write(f"- neuron: {neuron['mode']} ({neuron_text})\n")
    out.write(f"- time steps T: {cfg.time_steps}\n")
    if cfg.encoding != "direct":  # the model alone does not reproduce the results: its input was encoded
        where = "training and evaluation" if cfg.encode_eval else "training only; evaluated on the analogue image"
        settings = "".join(f", {k}={v}" for k, v in cfg.encoding_settings().items())
        out.write(f"- input encoding: {cfg.encoding}{settings} ({where}); feed the model the frames [B, T, C, H, W] "
                  "of spikedriven.encodings' encoding_class(name)\n")
    settings = ", ".join(f"{k} {v}" for k, v in cfg.model_settings().items())
    out.write(f"- model: {cfg.model} ({arch.title}): {settings}; {sum(p.numel() for p in model.parameters()):,} parameters\n")
    epochs = f"{done + 1} of {cfg.epochs} planned" if done is not None else f"unknown ({cfg.epochs} planned)"
    out.write(f"- epochs trained: {epochs}\n")
    out.write(f"- exported checkpoint: {checkpoint.name}\n")
    if cfg.plugins:
        out.write(f"- the neuron comes from plugins ({', '.join(cfg.plugins)}): load them before creating the model\n")
    out.write("\n## Results\n\n")
    if not results:
        out.write("Missing: the run folder holds neither results.json nor summary.csv, so no accuracy is reported.\n")
    else:
        where = f" on the {results['eval_set']} set" if results.get("eval_set") else ""
        out.write(f"From {results['source']}{where}:\n\n")
        for label, key in (("final", "final"), ("best", "best")):
            value = results.get(f"{key}_top1")
            if value is None:
                out.write(f"- {label} top-1: missing\n")
            else:
                out.write(f"- {label} top-1: {value:.2f}% (epoch {results.get(f'{key}_epoch')})\n")
        if checkpoint.name == "best.pth.tar":
            out.write("\nThese weights are the run's best epoch, not its final one.\n")
    out.write("\n## Loading with timm\n\n```python\n" + "# MODEL_DIR: the folder holding this card\n" + "\n".join(load_lines("MODEL_DIR", resolve=False)) + "\n```\n")
    return out.getvalue()
