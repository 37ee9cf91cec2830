"""Config files: a YAML file and flags over it -> a validated Config; the settings a run records; config.yaml.

``resolve_settings`` reads a run's settings once: the file read once, the config validated once, and with it
where each value came from and the values given explicitly (what a resume compares with its checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from ..atomic import write_text_atomic
from ..errors import ConfigError
from ..plugins import load_plugins
from .original_keys import fold_model_settings, inert_line, normalised, read_vocabulary
from .schema import FIELDS, Config
from .values import coerce


def from_mapping(values: Mapping[str, Any], source: str, base: Optional[Config] = None) -> Config:
    """A validated Config from ``base`` (defaults if None) updated with ``values``, which may use the
    original code's vocabulary (``TET``, ``model-ema: false``, ``drop_path``; see original_keys).

    Every problem of ``values`` (unknown keys, refused keys, wrong types) is reported in one message, so
    that a file is fixed in one round; keys that change nothing get one warning line per source."""
    data = (base or Config()).to_dict()
    _read_into(data, values, source)
    return Config(**data).validate()


def _read_into(data: dict, values: Mapping[str, Any], source: str) -> set:
    """``values`` read over ``data`` (a config's fields as a dict), each as its field's type: every problem
    in one message, keys that change nothing in one warning line per source. Not validated: the fields
    given (``values``' keys in our vocabulary)."""
    reading = read_vocabulary(values, FIELDS)
    problems = list(reading.problems)
    for key, value in reading.values.items():
        try:
            data[key] = _over(key, data[key], coerce(key, value, source))
        except ConfigError as e:
            problems.append(str(e))
    if len(problems) == 1:
        raise ConfigError(problems[0] if "(from " in problems[0] else f"{source}: {problems[0]}")
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problems: " + "; ".join(problems))
    if reading.experiment:
        data["output"] = experiment_output(data["output"], reading.experiment)
    if reading.inert:
        _warn_once(source, inert_line(source, reading.inert))
    for note in reading.notes:
        _warn_once(source, f"{source}: {note}")
    return set(reading.values) | ({"output"} if reading.experiment else set())


def _over(key: str, old: Any, new: Any) -> Any:
    """A value given over the one before: a model's settings add to those given before (a flag's --depth to
    a file's model_args, a resumed run's request to its record); every other field is replaced."""
    if key == "model_args":
        return {**old, **new}
    if key == "models":  # per model, its settings add to its entry (validate names one that is not a mapping)
        merged = dict(old)
        for name, settings in new.items():
            known = merged.get(name)
            merged[name] = {**known, **settings} if isinstance(known, dict) and isinstance(settings, dict) else settings
        return merged
    return new


def experiment_output(output: Optional[str], experiment: str) -> str:
    """timm's ``--experiment NAME``: the run folder NAME under ``--output`` (default output/train)."""
    return str(Path(output or "output/train") / experiment)


_WARNED: set = set()


def _warn_once(source: str, line: str) -> None:
    import logging

    key = (source, line)
    if key not in _WARNED:  # a study reads its file once per run: say it once
        _WARNED.add(key)
        logging.getLogger("spikedriven").warning(line)


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


@dataclass
class ResolvedSettings:
    """A run's settings as one resolution read them: the validated config, where each field's value came
    from, and the values given explicitly (``requested_values``')."""
    config: Config
    origins: dict  # field -> "default", "file" or "flag" (a flag given over the file's value: "flag")
    requested: dict  # the values given explicitly, in our vocabulary, as given; no default among them
    sources: dict  # for those of ``requested`` from the file (a model's settings by name): the file


def resolve_settings(path: Optional[str | Path] = None, overrides: Optional[Mapping[str, Any]] = None, *,
                     values: Optional[Mapping[str, Any]] = None) -> ResolvedSettings:
    """Defaults <- YAML file <- overrides (e.g. parsed flags): the file read once (``values``: its contents,
    where the caller has read it already), the config validated once."""
    overrides = overrides or {}
    from_file = {} if path is None else load_yaml(path) if values is None else values
    data = Config().to_dict()
    origins = dict.fromkeys(FIELDS, "default")
    if path is not None:
        origins.update(dict.fromkeys(_read_into(data, from_file, str(path)), "file"))
        if overrides:
            _settle_file(data)
    if overrides:
        origins.update(dict.fromkeys(_read_into(data, overrides, "command line"), "flag"))
    config = Config(**data).validate()
    requested, sources = _requested(from_file, overrides, path)
    return ResolvedSettings(config, origins, requested, sources)


def _settle_file(data: dict) -> None:
    """What a file's settings settle before the flags over them are read, as they always have: the
    normalisation of the file's dataset (a flag's --dataset over the file keeps the file's, which the
    runs made with such a command recorded) and the file's plugins, imported (a flag may name a setting of
    a model they register)."""
    from ..data import dataset_def  # here: the data package reads the schema

    definition = dataset_def(data["dataset"])
    data["mean"] = list(definition.mean) if data["mean"] is None else data["mean"]
    data["std"] = list(definition.std) if data["std"] is None else data["std"]
    load_plugins(data["plugins"])


def load_config(path: Optional[str | Path] = None, overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Defaults <- YAML file <- overrides (e.g. parsed flags), validated."""
    return resolve_settings(path, overrides).config


def requested_values(path: Optional[str | Path], overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    """The values given explicitly (a config file, then flags over it) and, for those from
    the file, the file they came from; the defaults are not in them. (``resolve_settings`` gives them
    with the config, from one reading of the file.)"""
    return _requested(load_yaml(path) if path is not None else {}, overrides, path)


def _requested(values: Mapping[str, Any], overrides: Mapping[str, Any],
               path: Optional[str | Path]) -> tuple[dict, dict]:
    """``requested_values`` of the file ``path``, which holds ``values``."""
    from_file = fold_model_settings(values)
    overrides = fold_model_settings(overrides)
    given = {**from_file, **overrides}
    for key in ("model_args", "models"):  # the flags' model settings add to the file's, as load_config read them
        if isinstance(from_file.get(key), Mapping) and isinstance(overrides.get(key), Mapping):
            given[key] = _over(key, from_file[key], overrides[key])
    # in our vocabulary, as load_config read them: the original's spellings are our keys, and its keys
    # that change nothing are not requests (load_config has refused the others already)
    reading = read_vocabulary(given, FIELDS)
    requested = dict(reading.values)
    if reading.experiment:
        requested["output"] = experiment_output(requested.get("output"), reading.experiment)
    in_file = {normalised(key) for key in from_file} - {normalised(key) for key in overrides}
    sources = {key: str(path) for key in requested if key in in_file}
    # a model setting is named by itself in messages (depth, not model_args)
    file_settings = set(from_file.get("model_args") or {}) - set(overrides.get("model_args") or {})
    sources.update({key: str(path) for key in file_settings})
    return requested, sources


def save_config(cfg: Config, path: str | Path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
