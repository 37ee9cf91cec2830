"""Which neuron trained a run folder that does not record it, and which folders are one run.

The original code's thresholds were constants in its source, and a summary.csv alone records no neuron at
all, so a run can be given a label:

* on the command line: ``DIR:MODE@U_TH`` (``runs/a:if_soft@1.2``), ``DIR:MODE`` for the neuron's default
  threshold (``lif``: 1) or a neuron without one; several folders as the segments of one resumed run:
  ``DIR1,DIR2`` or ``DIR1,DIR2:if@1``;
* in a labels file (``--labels FILE``, YAML; folders relative to the file)::

      labels:                      # folder: label
        cifar10-if_soft-1.2: if_soft@1.2
      runs:                        # folders that are segments of one run
        - folders: [if-1-part1, if-1-part2]
          label: if@1
          name: IF u_th 1 (resumed)   # optional: the run's name in tables

A label's neuron must be a registered one (``spikedriven neurons``). A folder name may hold ``:`` or
``,``: an argument that names an existing path is that path, whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import yaml

from ..errors import ConfigError, did_you_mean

LABEL_FORM = "a label is MODE or MODE@U_TH, such as if_soft@1.2 or lif"
_LABEL = re.compile(r"([A-Za-z_]\w*)(?:@(.*))?")


@dataclass(frozen=True)
class NeuronLabel:
    mode: str
    v_threshold: Optional[float]  # None: the neuron has no threshold


@dataclass(frozen=True)
class RunSpec:
    """One run to read: its folders (segments), the label given to it, and its name in tables."""

    folders: tuple[Path, ...]
    neuron: Optional[NeuronLabel] = None
    name: Optional[str] = None


def parse_label(text: str) -> NeuronLabel:
    """``if_soft@1.2`` -> NeuronLabel('if_soft', 1.2); ``lif`` -> LIF at its default threshold."""
    from ..neurons import NEURONS

    match = _LABEL.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"label {text!r} does not parse; {LABEL_FORM}")
    mode, threshold = match[1], match[2]
    if mode not in NEURONS:
        raise ConfigError(f"label {text!r} names the unknown neuron {mode!r}{did_you_mean(mode, NEURONS)}; "
                          f"registered neurons: {', '.join(NEURONS)}")
    param = NEURONS[mode].settings().get("v_threshold")
    if threshold is None:
        return NeuronLabel(mode, None if param is None else float(param.default))
    if param is None:
        raise ConfigError(f"label {text!r} gives a threshold, but neuron {mode!r} has none; give {mode!r} alone")
    try:
        value = float(threshold)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"label {text!r} does not parse: {threshold!r} is not a positive threshold; {LABEL_FORM}")
    return NeuronLabel(mode, value)


def _folders(text: str) -> tuple[Path, ...]:
    if Path(text).exists() or "," not in text:
        return (Path(text),)
    return tuple(Path(part) for part in text.split(",") if part)


def parse_run_argument(text: str) -> RunSpec:
    """``DIR``, ``DIR:LABEL``, ``DIR1,DIR2[:LABEL]``; split at the last ``:`` unless the whole names a path
    or what follows the ``:`` is a path's tail (holds a ``/``)."""
    head, colon, tail = text.rpartition(":")
    if not colon or Path(text).exists() or "/" in tail or "\\" in tail or not head:
        return RunSpec(_folders(text))
    return RunSpec(_folders(head), parse_label(tail))


def _mapping(value, what: str, path: Path) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {what} must be a mapping, not {type(value).__name__}")
    return value


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"labels file {path} cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError:
        raise ConfigError(f"labels file {path} is not valid YAML") from None
    data = _mapping(data if data is not None else {}, "the labels file", path)
    unknown = sorted(set(map(str, data)) - {"labels", "runs"})
    if unknown:
        raise ConfigError(f"labels file {path} has the unknown key {unknown[0]!r}; it holds labels: {{FOLDER: "
                          "LABEL}} and runs: [{folders: [...], label: LABEL, name: NAME}]")
    return data


def _entry(item, path: Path) -> RunSpec:
    item = _mapping(item, "each entry of runs", path)
    folders = item.get("folders")
    if isinstance(folders, str):
        folders = [folders]
    if not (isinstance(folders, list) and folders and all(isinstance(f, str) for f in folders)):
        raise ConfigError(f"{path}: each entry of runs needs folders: a list of folder names")
    extra = sorted(set(map(str, item)) - {"folders", "label", "name"})
    if extra:
        raise ConfigError(f"{path}: an entry of runs has the unknown key {extra[0]!r} (folders, label, name)")
    label = item.get("label")
    return RunSpec(tuple(path.parent / f for f in folders), None if label is None else parse_label(str(label)),
                   None if item.get("name") is None else str(item["name"]))


def read_labels_file(path: Union[str, Path]) -> list[RunSpec]:
    """The runs a labels file describes, in its order: each ``labels`` folder, then each ``runs`` entry."""
    path = Path(path)
    data = _read_yaml(path)
    labels = _mapping(data.get("labels") or {}, "labels", path)
    runs = data.get("runs") or []
    if not isinstance(runs, list):
        raise ConfigError(f"{path}: runs must be a list of {{folders: [...], label: LABEL}} entries")
    return ([RunSpec((path.parent / str(folder),), parse_label(str(label))) for folder, label in labels.items()]
            + [_entry(item, path) for item in runs])


def _key(folder: Path) -> Path:
    return folder.resolve()


def resolve_runs(arguments: Sequence[str], labels_file: Optional[Union[str, Path]] = None) -> list[RunSpec]:
    """The runs the command line names, labelled from the labels file where it names their folders (the
    command line's label wins); a folder of a ``runs`` entry brings the entry's other folders with it.
    Without arguments, every run of the labels file."""
    known = read_labels_file(labels_file) if labels_file is not None else []
    if not arguments:
        return known
    by_folder = {_key(f): spec for spec in known for f in spec.folders}
    out: list[RunSpec] = []
    for text in arguments:
        spec = parse_run_argument(text)
        filed = by_folder.get(_key(spec.folders[0])) if len(spec.folders) == 1 else None
        if filed is not None:
            spec = RunSpec(filed.folders, spec.neuron or filed.neuron, filed.name)
        if all(spec.folders != other.folders for other in out):
            out.append(spec)
    return out
