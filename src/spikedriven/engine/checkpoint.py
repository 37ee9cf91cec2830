"""Reading and writing checkpoints: ours and those of each architecture's original code.

Reading never unpickles arbitrary objects: ``torch.load(weights_only=True)``
with an allow-list that adds only ``argparse.Namespace`` (the original code
stores its command line that way). Loading into a model is strict; the only
keys ever dropped are the original's known dead weights, as the model's
architecture declares them (``Architecture.original_state_dict``).
"""

from __future__ import annotations

import argparse
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..atomic import atomic_write
from ..config.original_keys import normalised
from ..errors import CheckpointError
from ..models import ARCHITECTURES, architecture_of, renamed_args
from ..models.registry import Architecture, identify_state_dict

FORMAT_NAME = "spikedriven"
FORMAT_VERSION = 1

SAFE_GLOBALS = [argparse.Namespace]

PathLike = Union[str, os.PathLike]


def read_checkpoint(path: PathLike) -> dict:
    """Load a checkpoint file into a dict, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file fails anywhere in the unpickler (IndexError, struct.error, ...)
        raise CheckpointError(f"checkpoint {path} {_load_failure(path, e)}") from None
    if isinstance(ckpt, Mapping) and all(isinstance(v, torch.Tensor) for v in ckpt.values()) and ckpt:
        ckpt = {"state_dict": dict(ckpt)}  # a bare state dict
    elif isinstance(ckpt, Mapping) and "state_dict" not in ckpt and _is_tensor_dict(ckpt.get("model")) and ckpt["model"]:
        ckpt = {**ckpt, "state_dict": ckpt["model"]}  # the layout of plain torch.save scripts: {"model": ..., "epoch": ...}
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} holds no 'state_dict'; it is not a model checkpoint")
    for key in ("state_dict", "state_dict_ema"):
        if key in ckpt and not _is_tensor_dict(ckpt[key]):
            raise CheckpointError(f"checkpoint {path}: '{key}' is not a mapping of parameter names to tensors")
    return dict(ckpt)


def _load_failure(path: Path, error: Exception) -> str:
    """One readable clause on why torch.load failed, told from the file's first bytes
    (torch's own message is addressed to its API's users: it advises disabling safe loading)."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"holds an object of type {found.group(1)}, which is not on the allow-list for safe loading"
    with open(path, "rb") as f:
        head = f.read(512)
    size = path.stat().st_size
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format
        if not zipfile.is_zipfile(path):
            return f"is truncated or damaged: its zip archive ends early ({size:,} bytes)"
        return f"is damaged: its zip archive does not hold a readable PyTorch checkpoint ({size:,} bytes)"
    if head[:1] == b"\x80":  # a pickle, torch's legacy format
        return f"is truncated or damaged: its pickled data cannot be read ({size:,} bytes)"
    try:
        kind = "a text file" if b"\x00" not in head and head.decode("utf-8") else "empty"
    except UnicodeDecodeError:
        kind = "neither a zip archive nor a pickle"
    return f"is not a PyTorch checkpoint (it is {kind})"


def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def is_original_format(ckpt: Mapping) -> bool:
    """True for checkpoints written by the original SDT training script."""
    return ckpt.get("format") != FORMAT_NAME


def original_args(ckpt: Mapping) -> dict:
    """The original's command-line arguments (a pickled Namespace) as a dict; {} if absent."""
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args).copy()
    if isinstance(args, Mapping):
        return dict(args)
    return {}


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict:
    """The state dict without DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def model_architecture(model: nn.Module) -> Optional[Architecture]:
    """The registered family of ``model`` (None for a model that is not one of ours)."""
    return ARCHITECTURES.get(getattr(model, "architecture", ""))


def state_dict_for(model: nn.Module, ckpt: Mapping, key: str = "state_dict") -> dict:
    """The checkpoint's weights under the model's names: prefixes stripped, and a checkpoint of the original
    code read as the model's architecture reads its original's (renamed keys, dead weights dropped)."""
    state_dict = strip_prefixes(ckpt[key])
    arch = model_architecture(model)
    if arch is not None and is_original_format(ckpt):
        state_dict = arch.original_state_dict(state_dict)
    return state_dict


def checkpoint_model(ckpt: Mapping) -> Optional[str]:
    """The model a checkpoint of ours records (``config.model``; an earlier version's checkpoints record none)."""
    if is_original_format(ckpt):
        return None
    config = ckpt.get("config")
    return config.get("model") if isinstance(config, Mapping) else None


def other_architecture(model: nn.Module, ckpt: Mapping, key: str = "state_dict") -> Optional[str]:
    """A sentence naming both when ``ckpt`` holds another architecture's weights than ``model``, else None."""
    arch = model_architecture(model)
    if arch is None:
        return None
    recorded = checkpoint_model(ckpt)
    if recorded is not None:
        try:
            family = architecture_of(recorded).name
        except Exception:  # a model of a plugin not loaded, or no longer registered: the names say it
            family = recorded
    else:
        family = identify_state_dict(strip_prefixes(ckpt[key]))
    if family is None or family == arch.name:
        return None
    what = f"a {recorded} model ({family})" if recorded is not None and recorded != family else f"{family} weights"
    return f"holds {what}, and the model to load it into is {arch.name} ({arch.title})"


def fit_report(model: nn.Module, state_dict: Mapping[str, Any]) -> Optional[str]:
    """None when ``state_dict`` fits ``model`` exactly, else a description of every mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != expected[k].shape
    )
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts) or None


def flat_model_args(args: Mapping) -> dict:
    """Model settings with the neuron's spelled out: ``{"time_steps": 4, "spike_mode": "lif", "tau": 2.0, ...}``,
    under today's argument names (a checkpoint of an earlier version may record ``T``)."""
    flat = {k: v for k, v in renamed_args(args).items() if k != "neuron"}
    neuron = args.get("neuron")
    if isinstance(neuron, Mapping):
        flat["spike_mode"] = neuron.get("mode")
        flat.update({k: v for k, v in neuron.items() if k != "mode"})
    return flat


def recorded_model_args(ckpt: Mapping, arch: Optional[Architecture]) -> dict:
    """The model settings a checkpoint records (ours: its ``model_args``; the original's: the arguments its
    architecture's original code records, read as ours: dim is embed_dim, TET is tet)."""
    if not is_original_format(ckpt):
        return flat_model_args(ckpt.get("model_args") or {})
    args = original_args(ckpt)
    names = arch.original_args if arch is not None else ()
    return {normalised(theirs): args[theirs] for theirs in names if args.get(theirs) is not None}


def settings_mismatch(model: nn.Module, ckpt: Mapping) -> list[str]:
    """Each setting in which ``model`` differs from what ``ckpt`` was trained with, as 'name recorded (the model
    has value)'. Shapes are ``fit_report``'s business; this catches what keeps them: the neuron, T, heads."""
    have = flat_model_args(getattr(model, "model_args", None) or {})
    recorded = recorded_model_args(ckpt, model_architecture(model))
    return [
        f"{key} {recorded[key]!r} (the model has {have[key]!r})"
        for key in recorded
        # None: a setting left to the neuron's default by an earlier version
        if key in have and recorded[key] is not None and recorded[key] != have[key]
    ]


def load_checkpoint(model: nn.Module, path: PathLike, use_ema: bool = False, check_settings: bool = True) -> dict:
    """Load weights into ``model`` strictly; return the whole checkpoint dict.

    Accepts our own checkpoints and the original code's ``.pth.tar`` files
    (``module.`` prefixes, ``state_dict_ema`` with ``use_ema=True``). A model
    built with other neuron or time-step settings than the checkpoint records
    is refused unless ``check_settings=False``.
    """
    return load_into(model, read_checkpoint(path), path, use_ema, check_settings)


def load_into(model: nn.Module, ckpt: Mapping, path: PathLike, use_ema: bool = False, check_settings: bool = True,
              new_heads: bool = False) -> dict:
    """``load_checkpoint`` for a checkpoint already read from ``path``. ``new_heads``: a run that starts from the
    checkpoint's weights may add the heads the model declares it can start afresh (``fresh_heads``: SDT-V2's
    distillation head, which its T = 1 checkpoints lack); every other weight must be there."""
    key = "state_dict_ema" if use_ema else "state_dict"
    if key not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no '{key}' (it holds: {', '.join(sorted(ckpt))})")
    other = other_architecture(model, ckpt, key)
    if other:
        raise CheckpointError(f"checkpoint {path} {other}; build the model it was trained as (give --model)")
    state_dict = state_dict_for(model, ckpt, key)
    if new_heads:  # the heads the checkpoint lacks keep their initialisation
        fresh = tuple(f"{head}." for head in getattr(model, "fresh_heads", ()))
        state_dict = {**{k: v for k, v in model.state_dict().items() if k.startswith(fresh)}, **state_dict} \
            if fresh and not any(k.startswith(fresh) for k in state_dict) else state_dict
    problem = fit_report(model, state_dict)
    if problem:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({problem}); check the model size, number of classes and config")
    mismatched = settings_mismatch(model, ckpt) if check_settings else []
    if mismatched:
        raise CheckpointError(
            f"checkpoint {path} was trained with other settings than the model has: {'; '.join(mismatched)}; build the "
            "model with the checkpoint's settings, or pass check_settings=False to load its weights into this model on purpose"
        )
    model.load_state_dict(state_dict, strict=True)
    return dict(ckpt)


def save_checkpoint(path: PathLike, payload: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, fsync, rename.

    A crash leaves either the previous file or the new one, never a truncated one.
    """
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **payload}
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)
    return Path(path)
