"""The command line of a config: one flag per field, grouped by the fields' roles, with its default in --help."""

from __future__ import annotations

import dataclasses
import typing

import yaml

from ..neurons import NEURONS
from .schema import FIELDS, ROLES, fields_of
from .values import coerce, _base_type


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


# The end of the title of each role's group of flags, by which the docs' reference (docs/gen_reference.py)
# knows the config's groups.
CONFIG_GROUP_MARK = "(each flag also a YAML key)"


def section_title(role: str) -> str:
    """The title of a role's group of flags in --help: ``data (each flag also a YAML key)``."""
    return f"{ROLES[role][0]} {CONFIG_GROUP_MARK}"


# Short and original spellings of flags: timm's -b / -j, the study's --TET, --layer, --dim, --in-channels.
FLAG_ALIASES = {"batch_size": ["-b"], "workers": ["-j"], "tet": ["--TET"], "depth": ["--layer"], "embed_dim": ["--dim"],
                "in_chans": ["--in-channels"]}  # depth and embed_dim: model settings (see _add_model_flags)


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
    """One flag per config field, grouped by the fields' roles (a group per role, in the order of ROLES), each
    with its default in --help; every flag defaults to "not given" so that the YAML wins. A boolean is a bare
    flag (``--download``), ``--no-download`` turns it off, and ``--download false`` still reads."""
    for role, (_, description) in ROLES.items():
        group = parser.add_argument_group(section_title(role), description)
        for name in fields_of(role):
            _add_field_flag(group, name, exclude)
    _add_model_flags(parser, exclude)
    _add_neuron_flags(parser)


def _add_field_flag(group, name: str, exclude: tuple) -> None:
    """The flag of config field ``name`` (none for a field in ``exclude`` or a YAML-only one)."""
    import argparse

    f = FIELDS[name]
    if name in exclude or f.metadata.get("flag") is False:
        return
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


def _add_model_flags(parser, exclude: tuple = ()) -> None:
    """A flag for every setting of a registered model (into model_args), its help naming the models that
    take it and their defaults; the value is read as the chosen model's type for it."""
    import argparse

    from ..models import ARCHITECTURES

    owners: dict[str, list] = {}
    for arch in ARCHITECTURES.values():
        for key, param in arch.settings.items():
            owners.setdefault(key, []).append((arch, param))
    group = parser.add_argument_group("settings of the models (each also a YAML key, or model_args: {KEY: VALUE}; "
                                      "spikedriven models lists each model's)")
    for key, users in owners.items():
        if key in exclude:
            continue
        kind = users[0][1].kind
        kinds = {param.kind for _, param in users}  # one flag for every model that takes the name, read by each
        metavar = "|".join({bool: "BOOL", int: "INT", float: "FLOAT", list: "INTS"}.get(k, "STR") for k in kinds)
        text = "; ".join(f"{arch.name}: {param.doc} (default {_model_defaults(arch, key)})" for arch, param in users)
        bare = dict(nargs="?", const="true") if kind is bool else {}  # a bare --dvs-mode means true
        group.add_argument(flag_name(key), *FLAG_ALIASES.get(key, []), dest=f"modelarg_{key}", metavar=metavar,
                           default=argparse.SUPPRESS, help=text.replace("%", "%%"), **bare)
        if kind is bool:
            group.add_argument("--no-" + key.replace("_", "-"), dest=f"modelarg_{key}", action="store_const",
                               const="false", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _model_defaults(arch, key: str) -> str:
    """A setting's default, per entry point where they differ: '4 (spikformer_8_512: 8)'."""
    values = {model: arch.defaults(model)[key] for model in arch.sizes}
    first = next(iter(values.values()))
    others = [f"{model}: {value}" for model, value in values.items() if value != first]
    return f"{first}" + (f" ({', '.join(others)})" if others else "")


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
    settings = {k[9:]: v for k, v in values.items() if k.startswith("modelarg_")}
    if settings:  # --depth 4 is model_args depth=4, the text read as the model's type for it
        given = coerce("model_args", overrides.get("model_args", {}), "command line")
        overrides["model_args"] = {**given, **settings}
    settings = {k[7:]: v for k, v in values.items() if k.startswith("neuron_")}
    if settings:  # --levels 8 is neuron_args levels=8, read as YAML reads it
        given = coerce("neuron_args", overrides.get("neuron_args", {}), "command line")
        overrides["neuron_args"] = {**given, **{k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in settings.items()}}
    return overrides
