"""Continuing a run: which checkpoint, and with which settings.

A full resume continues the run its checkpoint records: the model, the
neurons, the data and the training recipe come from the checkpoint's config.
Settings that change how the run is carried out but not what it computes
(``RUNTIME_SETTINGS``: the fields whose role is runtime or reporting) may be
given anew, and the schedule may be lengthened or shortened (``SCHEDULE_LENGTH``;
the cosine is then re-planned from the current epoch). Every other setting that contradicts the checkpoint is refused
in one message naming them all, whether it came from a flag or a config file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from . import checkpoint as ckpt_io
from ..config import (FIELDS, NEURON_SETTINGS, RUNTIME_SETTINGS, SCHEDULE_LENGTH, Config, coerce, from_mapping,
                      recorded_config)
from ..errors import CheckpointError, ConfigError

log = logging.getLogger("spikedriven")

CHECKPOINT_NAMES = ("last.pth.tar", "best.pth.tar")
# RUNTIME_SETTINGS (how a run is carried out, not what it computes: a resume may change these) and
# SCHEDULE_LENGTH (a resume may change it, and the schedule is re-planned) are derived from the fields'
# roles (config.schema).


def show(value: Any) -> str:
    """A setting's value as the user would write it: 0.003, 'lif', [1.0, 1.0]."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def setting_changes(old: Config, new: Config, ignore: tuple = ()) -> dict[str, tuple[Any, Any]]:
    """``{name: (old, new)}`` for every setting that differs, in the config's order. The neuron's fields
    count as changed only if the neurons they describe differ (``surrogate_alpha: none`` is sigmoid's 4),
    and the model's settings one by one as resolved (a default given explicitly changes nothing; a config's
    entry for another model in ``models`` concerns no run of this one)."""
    a, b = old.to_dict(), new.to_dict()
    same_neuron = old.neuron_spec() == new.neuron_spec()
    neuron_fields = set(NEURON_SETTINGS)
    changes = {}
    for k in FIELDS:
        if k == "model_args" and old.model == new.model:
            before, after = old.model_settings(), new.model_settings()
            changes.update({key: (before[key], after[key]) for key in before if before[key] != after[key]})
        elif k not in ignore and k not in ("model_args", "models") and a[k] != b[k] \
                and not (same_neuron and k in neuron_fields):
            changes[k] = (a[k], b[k])
    return changes


# ------------------------------------------------------------ which checkpoint


def newest_checkpoint(run_dir: Path) -> tuple[Optional[Path], Optional[dict]]:
    """The valid checkpoint with the most progress, and its contents; unreadable ones are skipped with a warning."""
    best, best_ckpt, best_key = None, None, None
    for name in CHECKPOINT_NAMES:
        path = run_dir / name
        if not path.exists():
            continue
        try:
            ckpt = ckpt_io.read_checkpoint(path)
        except CheckpointError as e:
            log.warning("skipping %s: %s", path, e)
            continue
        key = (*progress(ckpt), name == "last.pth.tar")
        if best_key is None or key > best_key:
            best, best_ckpt, best_key = path, ckpt, key
    return best, best_ckpt


def progress(ckpt: Mapping) -> tuple[int, int]:
    """(epochs finished, steps into the next one) of one of our checkpoints."""
    return int(ckpt.get("epoch", -1)), int(ckpt.get("step", 0))


def describe_progress(ckpt: Mapping) -> str:
    epoch, step = progress(ckpt)
    return f"epoch {epoch}, step {step}" if step else f"after epoch {epoch - 1}" if epoch > 0 else "before the first epoch"


def is_behind(path: Path, ckpt: dict) -> bool:
    """Whether the checkpoint file ``path`` is missing, unreadable or holds less progress than ``ckpt``."""
    try:
        return progress(ckpt_io.read_checkpoint(path)) < progress(ckpt)
    except CheckpointError:
        return True


@dataclass
class ResumePlan:
    checkpoint: Optional[Path]  # None: fresh start
    weights_only: bool
    run_dir: Optional[Path]  # continue here (None: a new folder)
    contents: Optional[dict] = None  # the checkpoint, read once
    changes: dict = field(default_factory=dict)  # settings changed on resume: {name: (old, new)}

    @property
    def full(self) -> bool:
        return self.checkpoint is not None and not self.weights_only

    @property
    def replans_schedule(self) -> bool:
        return any(key in self.changes for key in SCHEDULE_LENGTH)


def plan_resume(resume: Optional[str], no_resume_opt: bool, output: Optional[str]) -> ResumePlan:
    if not resume:
        return ResumePlan(None, False, None)
    if resume == "auto":
        if not output:
            raise ConfigError("--resume auto needs --output RUN_FOLDER to know where to look")
        run_dir = Path(output)
        found, ckpt = newest_checkpoint(run_dir) if run_dir.is_dir() else (None, None)
        if found is None:
            return ResumePlan(None, False, run_dir)
        return ResumePlan(found, no_resume_opt, None if no_resume_opt else run_dir, ckpt)
    path = Path(resume)
    if path.is_dir():
        found, ckpt = newest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no readable checkpoint (last.pth.tar / best.pth.tar) in {path}")
        path = found
    else:
        ckpt = ckpt_io.read_checkpoint(path)
    return ResumePlan(path, no_resume_opt, None if no_resume_opt else path.parent, ckpt)


# ------------------------------------------------------------ which settings


def _typed(requested: Mapping[str, Any], sources: Mapping[str, str]) -> dict:
    return {key: coerce(key, value, sources.get(key, "command line")) for key, value in requested.items()}


def resolve_config(cfg: Config, requested: Mapping[str, Any], plan: ResumePlan,
                   sources: Optional[Mapping[str, str]] = None) -> Config:
    """The config a run continues with: the checkpoint's, with the runtime settings and schedule length
    of ``requested`` (the values given explicitly now, from a file or flags) applied; ``plan.changes``
    records what changed. Anything else in ``requested`` that contradicts the checkpoint is refused.
    A fresh start or a weights-only resume runs ``cfg`` as it is."""
    if not plan.full:
        return cfg
    ckpt = plan.contents
    if ckpt_io.is_original_format(ckpt) or not {"config", "optimizer", "scheduler"} <= set(ckpt):
        raise CheckpointError(
            f"{plan.checkpoint} holds weights but no training state to continue (written by the original code or "
            "without config and optimizer); add --no-resume-opt to start a new run from its weights"
        )
    sources = sources or {}
    wanted = _typed(requested, sources)
    run = recorded_config(ckpt["config"], f"{plan.checkpoint} config", wanted)
    if "output" in wanted and wanted["output"] is not None and Path(wanted["output"]).resolve() != plan.run_dir.resolve():
        raise ConfigError(
            f"a resumed run continues in its own folder {plan.run_dir}, and --output names {wanted['output']}; drop "
            f"--output, or add --no-resume-opt to start a new run in {wanted['output']} from the checkpoint's weights"
        )
    recorded_output = Path(run.output).resolve() if run.output else None
    wanted["output"] = run.output if recorded_output == plan.run_dir.resolve() else str(plan.run_dir)
    new = from_mapping(wanted, source="the settings given", base=run)
    changes = setting_changes(run, new)
    refused = {k: v for k, v in changes.items() if k not in RUNTIME_SETTINGS + SCHEDULE_LENGTH}
    if refused:
        files = sorted({sources[k] for k in refused if k in sources})
        origin = f" (from {', '.join(files)})" if files else ""
        listed = ", ".join(f"{k}={show(new_value)} (run: {show(old)})" for k, (old, new_value) in refused.items())
        raise ConfigError(
            f"cannot continue {plan.checkpoint} with other settings than it was trained with: {listed}{origin}; "
            "drop them to continue the run as it was, or add --no-resume-opt to start a new run from its weights"
        )
    trained = epochs_trained(ckpt)
    if new.total_epochs < trained:
        raise ConfigError(
            f"{plan.checkpoint} has already trained {trained} epochs; epochs + cooldown_epochs = {new.total_epochs} "
            "would end it before that"
        )
    plan.changes = changes
    return new


def epochs_trained(ckpt: Mapping) -> int:
    """Epochs a checkpoint of ours has finished, counting a started one."""
    epoch, step = progress(ckpt)
    return epoch + (1 if step else 0)


def describe_changes(plan: ResumePlan) -> list[str]:
    """One phrase per change, for the run's log."""
    out = []
    for key, (old, new) in plan.changes.items():
        if key in SCHEDULE_LENGTH:
            out.append(f"{key} {show(old)} -> {show(new)}: schedule re-planned from epoch {progress(plan.contents)[0]}")
        elif key == "output":
            out.append(f"output {old} -> {new} (the run folder was moved)")
        else:
            out.append(f"{key} {show(old)} -> {show(new)}")
    return out
