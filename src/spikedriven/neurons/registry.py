"""Neurons by name: the registry, the factory, plugins and the listing of ``spikedriven neurons``.

A neuron of your own is one class in one file::

    from spikedriven.neurons import Param, StepOps, ThresholdNeuron, register_neuron

    @register_neuron
    class MyNeuron(ThresholdNeuron):
        name = "my_neuron"
        ...

and ``--plugins my_neurons.py`` (a file, or an importable module) loads it. The
run's config records the plugins, so evaluation, comparison, resuming and the
study import them again on their own.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ..errors import ConfigError
from .base import SpikingNeuron
from .spec import NeuronSpec, Param, StepOps
from .surrogates import SURROGATES

__all__ = ["NEURONS", "create_neuron", "describe_neurons", "load_plugins", "neuron_class", "register_neuron", "resolve_spec"]

NEURONS: dict[str, type[SpikingNeuron]] = {}
_PLUGINS: dict[str, int] = {}  # plugin (resolved path or module name) -> neurons and surrogates it registered


def register_neuron(cls: type[SpikingNeuron]) -> type[SpikingNeuron]:
    """Make ``cls`` available as ``--spike-mode <cls.name>``: a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, SpikingNeuron)):
        raise TypeError(f"@register_neuron decorates a SpikingNeuron subclass, got {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"neuron class {cls.__qualname__} needs a name that is an identifier (its --spike-mode), got {name!r}")
    taken = NEURONS.get(name)
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"a neuron named {name!r} is registered already ({taken.__module__}.{taken.__qualname__})")
    for key, param in cls.settings().items():
        if not isinstance(param, Param):
            raise TypeError(f"neuron {name!r}: setting {key!r} must be a Param, got {param!r}")
    if not isinstance(cls.ops, StepOps):
        raise TypeError(f"neuron {name!r}: ops must be a StepOps")
    NEURONS[name] = cls
    return cls


def neuron_class(name: str) -> type[SpikingNeuron]:
    try:
        return NEURONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown spike mode {name!r}; registered neurons: {', '.join(NEURONS)}; a neuron of your own "
            "is loaded with --plugins FILE"
        ) from None


def resolve_spec(spec: Union[NeuronSpec, Mapping[str, Any], str]) -> NeuronSpec:
    """``spec`` with every setting of its neuron filled in and checked."""
    spec = NeuronSpec.from_any(spec)
    return NeuronSpec(spec.mode, **neuron_class(spec.mode).resolve(spec.params))


def create_neuron(spec: Union[NeuronSpec, Mapping[str, Any], str], **overrides: Any) -> SpikingNeuron:
    """One neuron layer, e.g. ``create_neuron({"mode": "if_soft", "v_threshold": 1.0})``."""
    spec = NeuronSpec.from_any(spec)
    if overrides:
        spec = spec.replace(**overrides)
    return neuron_class(spec.mode)(spec)


# ------------------------------------------------------------------ plugins


def plugin_key(plugin: str) -> str:
    """How a plugin is recorded: a file as its absolute path (so another folder finds it), a module by name."""
    path = Path(plugin).expanduser()
    return str(path.resolve()) if path.suffix == ".py" or path.is_file() else plugin


def load_plugins(plugins: Sequence[str]) -> None:
    """Import each plugin (a ``.py`` file or a module name) once; each must register a neuron or a surrogate."""
    for plugin in plugins:
        key = plugin_key(plugin)
        if key in _PLUGINS:
            continue
        before = len(NEURONS) + len(SURROGATES)
        path = Path(key)
        try:
            if path.suffix == ".py" or path.is_file():
                if not path.is_file():
                    raise ConfigError(f"plugin {plugin} does not exist")
                module_name = f"spikedriven_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
                loader_spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[module_name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]
                    raise
            else:
                importlib.import_module(key)
        except ConfigError:
            raise
        except ModuleNotFoundError as e:
            if e.name == key.split(".")[0]:
                raise ConfigError(f"plugin {plugin} is neither a .py file nor an importable module") from None
            raise ConfigError(f"plugin {plugin} failed to import: {type(e).__name__}: {e}") from None
        except Exception as e:  # the plugin's own code: any error it raises is the plugin's
            first = (str(e).strip().splitlines() or [""])[0]
            raise ConfigError(f"plugin {plugin} failed to import: {type(e).__name__}: {first}") from None
        added = len(NEURONS) + len(SURROGATES) - before
        if not added:
            raise ConfigError(
                f"plugin {plugin} registered no neuron or surrogate; decorate a SpikingNeuron subclass with "
                "@register_neuron (from spikedriven.neurons)"
            )
        _PLUGINS[key] = added


# ------------------------------------------------------------------ listing


def _default(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def describe_neurons() -> str:
    """Every registered neuron: name, equations, settings with defaults, fused form, cost per step."""
    lines = []
    for name, cls in NEURONS.items():
        probe = cls(NeuronSpec(name))  # the defaults, to ask for its fused form
        fused = "fused kernels on CUDA" if probe.fused_form() is not None else "no fused form: runs in PyTorch everywhere"
        learned = f"; learns {', '.join(probe.learned())}" if probe.learned() else ""
        lines += [f"{name}: {cls.title}{learned}", f"  {cls.equations}"]
        for key, param in cls.settings().items():
            lines.append(f"  --{key.replace('_', '-'):<18} {_default(param.default):<9} {param.doc}")
        lines += [f"  per step: {cls.ops.describe()}; {fused}", ""]
    lines.append("surrogates (--surrogate, its sharpness --surrogate-alpha):")
    lines += [f"  {n:<20} alpha {s.default_alpha:g}: dS/dx = {s.formula}" for n, s in SURROGATES.items()]
    return "\n".join(lines)
