"""Architectures by name: the registry every path derives from (config, checkpoints, export, study, listing).

An architecture is one file under ``models/`` that registers an ``Architecture``: its typed settings with
their defaults, its entry points (the timm names, each with its sizes), what relates its settings (sizes
that must divide), and how it reads the checkpoints of its original code. The file also registers each
entry point with timm (``@register_model``), so ``timm.create_model(name, ...)`` builds it.

Every model takes the same common arguments besides its own settings: ``num_classes``, ``img_size``,
``in_chans``, ``time_steps``, ``tet`` and the neuron (``neuron=``, ``attn_neuron=``), which the run's
config supplies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ..errors import ConfigError, did_you_mean, unknown_choice
from ..neurons.spec import Param

__all__ = ["ARCHITECTURES", "Architecture", "architecture_of", "at_least", "identify_state_dict", "positive", "model_names", "register_architecture",
           "resolve_model_settings", "setting_names"]

# The arguments every model takes from the run's config rather than from its own settings.
COMMON_ARGS = ("num_classes", "img_size", "in_chans", "time_steps", "tet", "neuron")


def _keep(state_dict: Mapping) -> dict:
    return dict(state_dict)


@dataclass(frozen=True)
class Architecture:
    """A family of models defined in one file, and everything outside the model that depends on it.

    ``settings``: its own constructor arguments (typed, with defaults and checks), which a config gives
    under ``model_args`` (or as top-level keys and flags). ``sizes``: its entry points, each the timm
    model name of one configuration, with the values it sets over the defaults; a value for a name that
    is not a setting is fixed by the entry point (such as a layout) and cannot be changed by a config.
    ``check(values)`` returns what is wrong with a combination of settings, or None.
    ``original_state_dict`` turns a state dict written by the original code into ours (renamed keys,
    dead weights dropped); ``original_args`` names the model settings the original's checkpoints record in
    their pickled arguments, in its spelling (read as ours through the config's vocabulary); ``matches`` tells whether a state dict, after that conversion,
    holds this family's weights (so that loading one family's checkpoint into another names both).
    """

    name: str
    title: str
    settings: Mapping[str, Param]
    sizes: Mapping[str, Mapping[str, Any]]
    check: Optional[Callable[[Mapping[str, Any]], Optional[str]]] = None
    original_state_dict: Callable[[Mapping], dict] = _keep
    original_args: tuple[str, ...] = ()
    matches: Callable[[Mapping], bool] = lambda state_dict: False
    reference: str = ""
    label: Optional[Callable[[Mapping[str, Any]], str]] = None
    feature_stages: int = 0  # a model of fixed stages (MetaFormers: 4): their number; 0: the stem and each block
    # published best-epoch top-1, for comparison only: {(dataset, size label, T): {(neuron, u_th): top-1}}
    published: Mapping[tuple, Mapping[tuple, float]] = field(default_factory=dict)

    def size_label(self, model: str, settings: Mapping[str, Any]) -> str:
        """How papers name this configuration: 'sdt 2-256' (blocks-width), or the architecture's own ``label``."""
        if self.label is not None:
            return f"{model} {self.label(settings)}"
        if "depth" in settings and "embed_dim" in settings:
            return f"{model} {settings['depth']}-{settings['embed_dim']}"
        return model

    def size_text(self, model: str, settings: Mapping[str, Any]) -> str:
        """The size spelled out for a reader, 'sdt, depth 1, width 64'; ``size_label`` stays the short key of
        the published figures."""
        def joined(value) -> str:
            return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

        words = [model]
        for key, name in (("depth", "depth"), ("depths", "depths"), ("embed_dim", "width"), ("embed_dims", "widths")):
            if settings.get(key) is not None:
                words.append(f"{name} {joined(settings[key])}")
        if len(words) == 1 and self.label is not None:
            words.append(self.label(settings))
        return ", ".join(words)

    def defaults(self, model: str) -> dict:
        """The settings of entry point ``model`` when nothing is given."""
        sized = self.sizes[model]
        return {key: sized.get(key, param.default) for key, param in self.settings.items()}

    def fixed(self, model: str) -> dict:
        """What entry point ``model`` sets that no config can change."""
        return {k: v for k, v in self.sizes[model].items() if k not in self.settings and k not in COMMON_ARGS}

    def resolve(self, model: str, given: Mapping[str, Any], source: str = "model_args") -> dict:
        """Every setting of ``model``: ``given`` (read as each setting's type and checked) over its defaults;
        one sentence for a setting it does not take, a bad value, or sizes that do not fit together."""
        unknown = [key for key in given if key not in self.settings]
        if unknown:
            raise ConfigError(_not_taken(model, self, unknown, given, source))
        values = self.defaults(model)
        for key, value in given.items():
            values[key] = _typed(model, key, self.settings[key], value)
        for key, param in self.settings.items():
            problem = param.check(values[key], values) if param.check and values[key] is not None else None
            if problem:
                raise ConfigError(f"model {model}: {key} {problem}, got {values[key]!r}")
        problem = self.check(values) if self.check else None
        if problem:
            raise ConfigError(f"model {model}: {problem}")
        return values


def at_least(minimum: int) -> Callable:
    """A ``Param`` check: an integer setting's lower bound."""
    def check(value, settings) -> Optional[str]:
        return None if value >= minimum else f"must be >= {minimum}"
    return check


def positive(value, settings) -> Optional[str]:
    """A ``Param`` check: a number above 0."""
    return None if value > 0 else "must be > 0"


def _typed(model: str, key: str, param: Param, value: Any) -> Any:
    """``value`` as the setting's type; text (a flag's word) is read as that type."""
    if isinstance(value, str) and param.kind is not str:
        text = value.strip()
        try:
            if param.kind is bool:
                if text.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                    raise ValueError
                value = text.lower() in ("true", "yes", "on", "1")
            elif param.kind is int:
                value = int(text)
            elif param.kind is float:
                value = float(text)
            elif param.kind is list:  # "96,192,384,480" or "[96, 192, 384, 480]"
                value = [int(word) for word in text.strip("[]").replace(",", " ").split()]
        except ValueError:
            pass  # left as text: coerce names the type it needs
    elif param.kind is str and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    try:
        return param.coerce(value)
    except ValueError as e:
        raise ConfigError(f"model {model}: {key} {e}, got {value!r}") from None


def _not_taken(model: str, arch: Architecture, unknown: list, given: Mapping, source: str) -> str:
    owners = {key: [a.name for a in ARCHITECTURES.values() if key in a.settings] for key in unknown}
    listed = ", ".join(f"{key} ({given[key]!r})" for key in unknown)
    others = sorted({name for names in owners.values() for name in names})
    whose = f"; {' and '.join(unknown) if len(unknown) > 1 else 'it'} belong{'s' if len(unknown) == 1 else ''} to " \
            f"{', '.join(others)}, and a config for several models gives each its own under models: {{NAME: {{...}}}}" \
        if others else ""
    hint = "" if others else _suggestion(unknown[0], arch)
    return (f"model {model} takes no {listed} (from {source}){hint}; its settings are {', '.join(arch.settings)}"
            f"{whose} (spikedriven models lists every model's)")


def _suggestion(key: str, arch: Architecture) -> str:
    return did_you_mean(key, arch.settings)


ARCHITECTURES: dict[str, Architecture] = {}  # family name -> its definition
_ENTRY_POINTS: dict[str, Architecture] = {}  # timm model name -> its family


def register_architecture(arch: Architecture) -> Architecture:
    """Make ``arch``'s entry points buildable by name through the config; its file registers them with timm."""
    taken = ARCHITECTURES.get(arch.name)
    if taken is not None and taken is not arch:
        raise ValueError(f"an architecture named {arch.name!r} is registered already")
    for model in arch.sizes:
        owner = _ENTRY_POINTS.get(model)
        if owner is not None and owner.name != arch.name:
            raise ValueError(f"model name {model!r} is an entry point of {owner.name!r} already")
    for key, param in arch.settings.items():
        if key in COMMON_ARGS or not isinstance(param, Param):
            raise TypeError(f"architecture {arch.name!r}: setting {key!r} must be a Param and not one of {COMMON_ARGS}")
    ARCHITECTURES[arch.name] = arch
    _ENTRY_POINTS.update({model: arch for model in arch.sizes})
    return arch


def model_names() -> list[str]:
    """Every registered entry point, family by family."""
    return list(_ENTRY_POINTS)


def architecture_of(model: str) -> Architecture:
    """The family of entry point ``model``; an unknown name is one sentence listing the registered ones."""
    try:
        return _ENTRY_POINTS[model]
    except (KeyError, TypeError):
        raise ConfigError(f"{unknown_choice('model', model, _ENTRY_POINTS)} (spikedriven models lists them with their "
                          "sizes); a model of your own is loaded with --plugins FILE") from None


def resolve_model_settings(model: str, given: Mapping[str, Any], source: str = "model_args") -> dict:
    return architecture_of(model).resolve(model, given, source)


def setting_names() -> dict[str, list[str]]:
    """Every setting name of a registered architecture -> the families that take it."""
    names: dict[str, list[str]] = {}
    for arch in ARCHITECTURES.values():
        for key in arch.settings:
            names.setdefault(key, []).append(arch.name)
    return names


def identify_state_dict(state_dict: Mapping) -> Optional[str]:
    """The family whose weights ``state_dict`` holds (ours, or converted from an original), if one matches."""
    for arch in ARCHITECTURES.values():
        try:
            if arch.matches(arch.original_state_dict(state_dict)):
                return arch.name
        except Exception:  # a converter meeting another family's keys
            continue
    return None
