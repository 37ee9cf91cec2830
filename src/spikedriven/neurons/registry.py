"""Neurons by name: the registry, the factory and the listing of ``spikedriven neurons``.

A neuron of your own is one class in one file::

    from spikedriven.neurons import Param, StepOps, ThresholdNeuron, register_neuron

    @register_neuron
    class MyNeuron(ThresholdNeuron):
        name = "my_neuron"
        ...

and ``--plugins my_neurons.py`` (a file, or an importable module) loads it
(``spikedriven.plugins``). The run's config records the plugins, so evaluation,
comparison, resuming and the study import them again on their own.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

from ..errors import ConfigError, unknown_choice
from .base import SpikingNeuron
from .spec import BinaryOps, NeuronSpec, Param, StepOps
from .surrogates import SURROGATES

__all__ = ["NEURONS", "create_neuron", "describe_neurons", "neuron_class", "register_neuron", "resolve_spec",
           "unknown_neuron_message"]

NEURONS: dict[str, type[SpikingNeuron]] = {}


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
    if not isinstance(cls.binary_ops, BinaryOps):
        raise TypeError(f"neuron {name!r}: binary_ops must be a BinaryOps")
    NEURONS[name] = cls
    return cls


def neuron_class(name: str) -> type[SpikingNeuron]:
    try:
        return NEURONS[name]
    except KeyError:
        raise ConfigError(unknown_neuron_message(name)) from None


def unknown_neuron_message(name: str, flags: Sequence[str] = ()) -> str:
    """An unknown ``--spike-mode``: the closest registered neuron, and the --plugins that a neuron of one's own
    needs; ``flags``: options of the command line left unrecognised, most likely that neuron's settings."""
    settings = f": its settings ({', '.join(flags)} here) are flags only once it is loaded" if flags else ""
    return (f"{unknown_choice('spike mode', name, NEURONS, 'neurons')}; is it a neuron of your own? give the file "
            f"that registers it with --plugins FILE{settings}")


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
        lines.append(f"  per step: {cls.ops.describe()}; {fused}")
        if probe.output_levels() > 1:
            lines.append(f"  per step as binary spikes: {cls.binary_ops.describe(probe.output_levels())}")
        lines.append("")
    lines.append("surrogates (--surrogate, its sharpness --surrogate-alpha):")
    lines += [f"  {n:<20} alpha {s.default_alpha:g}: dS/dx = {s.formula}" for n, s in SURROGATES.items()]
    return "\n".join(lines)
