"""What a neuron is made of, as plain data: its settings, its cost per step, its fused form.

A leaf module (it imports nothing of spikedriven's): the neuron classes, the
config, the energy model and the command line all read these descriptions.

* ``Param``: one setting of a neuron (default, meaning, type, valid range).
* ``NeuronSpec``: a neuron by registered name and the values of its settings.
* ``StepOps``: what one step of one neuron costs (operations, state traffic).
* ``BinaryOps``: what one step of a multi-level neuron costs when it sends its level k as k
  binary spikes over D sub-steps (the energy models' expanded view).
* ``FusedForm``: the neuron as numbers for the fused kernels, which know no
  neuron names: charge ``H = V + X`` (no leak) or ``H = V + (X - (V - V_reset)) g``
  with ``g = 1/tau`` (a division, as the reference computes it) or a factor
  ``g = k``; fire ``S = Θ(H - u_th)``; reset to ``V_reset`` or by ``u_th``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Union

__all__ = ["BinaryOps", "FusedForm", "NeuronSpec", "Param", "StepOps"]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_KIND_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string",
               list: "a list of integers"}


@dataclass(frozen=True)
class Param:
    """One setting of a neuron (or of a model's architecture).

    ``kind``: float, int, bool, str, or list (a list of integers, such as a width per stage).
    ``check(value, settings)`` returns what is wrong with a value (a phrase such as
    "must be > 0"), or None; ``settings`` holds every setting of the neuron, for
    checks that relate two of them (``v_reset`` below ``v_threshold``).
    """

    default: Any
    doc: str
    kind: type = float
    allow_none: bool = False
    check: Optional[Callable[[Any, Mapping[str, Any]], Optional[str]]] = None

    def coerce(self, value: Any) -> Any:
        """``value`` as this setting's type, or raise ValueError with the phrase to report."""
        if value is None:
            if self.allow_none:
                return None
            raise ValueError(f"must be {_KIND_WORDS[self.kind]}")
        if self.kind is float and is_number(value):
            return float(value)
        if self.kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if self.kind in (bool, str) and isinstance(value, self.kind):
            return value
        if self.kind is list and isinstance(value, (list, tuple)) and value and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        raise ValueError(f"must be {_KIND_WORDS[self.kind]}{' or none' if self.allow_none else ''}")


@dataclass(frozen=True)
class StepOps:
    """The cost of one time step of one neuron, for energy models: arithmetic operations by kind,
    and reads and writes of its state (the membrane potential) in memory."""

    add: int = 0  # additions and subtractions
    mul: int = 0  # multiplications (a division by a constant is one)
    compare: int = 0
    select: int = 0  # choosing between two values (a hard reset's V_reset)
    state_reads: int = 0
    state_writes: int = 0

    def describe(self) -> str:
        parts = [f"{n} {k}" for k, n in (("add", self.add), ("mul", self.mul), ("compare", self.compare),
                                        ("select", self.select)) if n]
        state = f"{self.state_reads} state read, {self.state_writes} write" if self.state_reads or self.state_writes else "no state"
        return ", ".join(parts) + f"; {state}"


@dataclass(frozen=True)
class BinaryOps:
    """The cost of one time step of one multi-level neuron (``output_levels()`` D > 1) run spike-driven:
    its level k sent as k binary spikes over D sub-steps. ``sub_step``: each of the D sub-steps;
    ``step``: what runs once per step, before them."""

    sub_step: StepOps
    step: StepOps = StepOps()

    def describe(self, levels: int) -> str:
        return f"{levels} sub-steps x ({self.sub_step.describe()}) + once ({self.step.describe()})"


@dataclass(frozen=True)
class FusedForm:
    """A neuron as the fused kernels compute it. ``k`` and ``v_threshold`` may be tensors
    (0-d, a learnable parameter's current value): the kernels then return their gradients."""

    leak: str = "none"  # "none", "divide" (by tau) or "multiply" (by k)
    tau: float = 1.0
    k: Any = 1.0
    v_reset: float = 0.0  # the hard reset's target and the potential at t = 0
    soft_reset: bool = False  # V = H - u_th S instead of V = H (1 - S) + V_reset S
    v_threshold: Any = 1.0

    def __post_init__(self):
        if self.leak not in ("none", "divide", "multiply"):
            raise ValueError(f"unknown leak {self.leak!r}; a fused form's leak is none, divide or multiply")


class NeuronSpec:
    """A neuron by its registered name (``mode``) and the values of some of its settings
    (the others take the neuron's defaults). Immutable and hashable.

        NeuronSpec("if_soft", v_threshold=1.2)
        NeuronSpec.from_any({"mode": "plif", "tau": 3.0})
    """

    __slots__ = ("mode", "params")

    def __init__(self, mode: str = "lif", **params: Any):
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "params", MappingProxyType(dict(params)))

    def __getattr__(self, name: str) -> Any:  # spec.v_threshold
        params = object.__getattribute__(self, "params")
        if name in params:
            return params[name]
        raise AttributeError(f"neuron spec {self.mode!r} has no setting {name!r}")

    def __setattr__(self, name, value):
        raise AttributeError("a NeuronSpec is immutable; use replace()")

    def replace(self, **changes: Any) -> "NeuronSpec":
        mode = changes.pop("mode", self.mode)
        return NeuronSpec(mode, **{**self.params, **changes})

    def to_dict(self) -> dict:
        return {"mode": self.mode, **self.params}

    @classmethod
    def from_any(cls, spec: Union["NeuronSpec", Mapping[str, Any], str]) -> "NeuronSpec":
        if isinstance(spec, NeuronSpec):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, Mapping):
            values = dict(spec)
            return cls(values.pop("mode", "lif"), **values)
        raise TypeError(f"a neuron spec is a NeuronSpec, a mapping or a neuron name, got {type(spec).__name__}")

    def __eq__(self, other) -> bool:
        return isinstance(other, NeuronSpec) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.mode, tuple(sorted(self.params.items()))))

    def __repr__(self) -> str:
        settings = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"NeuronSpec({self.mode!r}{settings})"

    def __reduce__(self):
        return (_rebuild_spec, (self.mode, dict(self.params)))


def _rebuild_spec(mode: str, params: dict) -> NeuronSpec:
    return NeuronSpec(mode, **params)
