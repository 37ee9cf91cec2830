"""Spiking neurons: the research variable of the study.

Every neuron runs multi-step over the leading time axis of its input
``[T, ...]``. The membrane potential starts at ``V_reset`` (0 for soft reset)
inside each call, so no state can leak from one batch into the next and no
``reset_net`` call is needed.

Each step does charge -> fire -> reset, with ``S = Θ(H - u_th)`` and
``Θ(x) = 1 if x >= 0``:

* LIF:           ``H = V + (X - (V - V_reset)) / tau``;  ``V = H (1 - S) + V_reset S``
* IF hard reset: ``H = V + X``;                         ``V = H (1 - S) + V_reset S``
* IF soft reset: ``H = V + X``;                         ``V = H - u_th S``

The spike is a Heaviside step in the forward pass; its gradient is a
surrogate chosen by name (``sigmoid`` by default, ``a sig(a x)(1 - sig(a x))``).
With ``detach_reset`` the reset does not carry gradient.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .errors import ConfigError
from .fused import fused_available, fused_neuron
from .spike_ops import norm_then

# ---------------------------------------------------------------- surrogates


class _SurrogateSpike(torch.autograd.Function):
    """Heaviside step forward; each subclass defines its surrogate gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)


class _SigmoidSpike(_SurrogateSpike):
    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        """Derivative of ``sigmoid(alpha x)``, multiplied in the reference's order."""
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(x * ctx.alpha)
        return grad_output * (1.0 - sg) * sg * ctx.alpha, None


class _ATanSpike(_SurrogateSpike):
    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        """Derivative of ``atan(pi/2 alpha x) / pi + 1/2``."""
        (x,) = ctx.saved_tensors
        z = (math.pi / 2 * ctx.alpha) * x
        return grad_output * (ctx.alpha / 2) / (1.0 + z * z), None


SURROGATES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "sigmoid": _SigmoidSpike.apply,
    "atan": _ATanSpike.apply,
}

SPIKE_MODES = ("lif", "if", "if_soft")
SOFT_RESET_MODES = frozenset({"if_soft"})

# ---------------------------------------------------------------- neuron spec


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class NeuronSpec:
    """Every setting of a neuron layer; validated on construction.

    ``v_reset=None`` means the mode's own reset: 0 for ``lif`` and ``if``, none
    (soft reset) for ``if_soft``.
    """

    mode: str = "lif"
    v_threshold: float = 1.0
    v_reset: Optional[float] = None
    tau: float = 2.0
    surrogate: str = "sigmoid"
    surrogate_alpha: float = 4.0
    detach_reset: bool = True

    def __post_init__(self):
        if self.mode not in SPIKE_MODES:
            raise ConfigError(f"unknown spike mode {self.mode!r}; valid modes are: {', '.join(SPIKE_MODES)}")
        if self.surrogate not in SURROGATES:
            raise ConfigError(
                f"unknown surrogate {self.surrogate!r}; valid surrogates are: {', '.join(SURROGATES)}"
            )
        for name in ("v_threshold", "tau", "surrogate_alpha"):
            if not _is_number(getattr(self, name)):
                raise ConfigError(f"neuron setting {name} must be a finite number, got {getattr(self, name)!r}")
        if self.v_threshold <= 0:
            raise ConfigError(f"v_threshold must be > 0, got {self.v_threshold}")
        if self.tau < 1:
            raise ConfigError(f"tau must be >= 1 (leak factor 1 - 1/tau in [0, 1)), got {self.tau}")
        if self.surrogate_alpha <= 0:
            raise ConfigError(f"surrogate_alpha must be > 0, got {self.surrogate_alpha}")
        if not isinstance(self.detach_reset, bool):
            raise ConfigError(f"detach_reset must be true or false, got {self.detach_reset!r}")
        if self.v_reset is not None:
            if self.mode in SOFT_RESET_MODES:
                raise ConfigError(f"spike mode {self.mode!r} uses soft reset; leave v_reset unset (None)")
            if not _is_number(self.v_reset) or self.v_reset >= self.v_threshold:
                raise ConfigError(f"v_reset must be a number below v_threshold, got {self.v_reset!r}")

    @property
    def resolved_v_reset(self) -> Optional[float]:
        if self.mode in SOFT_RESET_MODES:
            return None
        return 0.0 if self.v_reset is None else float(self.v_reset)

    def replace(self, **changes) -> "NeuronSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_any(cls, spec: Union["NeuronSpec", Mapping[str, Any], str]) -> "NeuronSpec":
        if isinstance(spec, NeuronSpec):
            return spec
        if isinstance(spec, str):
            return cls(mode=spec)
        if isinstance(spec, Mapping):
            valid = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(spec) - valid)
            if unknown:
                raise ConfigError(f"unknown neuron setting(s) {unknown}; valid settings are: {sorted(valid)}")
            return cls(**spec)
        raise ConfigError(f"a neuron spec must be a NeuronSpec, a mapping or a mode name, got {type(spec).__name__}")


# ------------------------------------------------------------------- neurons


class SpikingNeuron(nn.Module):
    """Base class: subclasses define ``charge`` and ``reset``; ``fire`` is shared."""

    use_fused = True  # False keeps the per-step loop below on CUDA too

    def __init__(self, spec: NeuronSpec):
        super().__init__()
        self.spec = spec
        self.v_threshold = spec.v_threshold
        self.v_reset = spec.resolved_v_reset
        self.surrogate_alpha = spec.surrogate_alpha
        self.detach_reset = spec.detach_reset
        self._spike_fn = SURROGATES[spec.surrogate]

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        return self._spike_fn(h - self.v_threshold, self.surrogate_alpha)

    def reset(self, h: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, norm: Optional[nn.BatchNorm2d] = None, pre: Sequence[nn.Module] = ()
    ) -> torch.Tensor:
        """``x``: input current ``[T, ...]``; returns spikes of the same shape and dtype.

        With ``norm``, ``x`` is ``[T, B, ...]`` and the input current is
        ``norm(pre(x))``, both applied frame-wise (``pre``: layers such as a
        convolution). In training, backward then recomputes the normalised
        current instead of keeping it, and in the ``"min"`` memory mode the
        ``pre`` layers' output too (``spikedriven.spike_ops``).
        """
        if norm is not None:
            return norm_then(x, norm, self.multi_step, pre)
        if pre:
            raise ValueError("pre layers come with a norm: neuron(x, norm=bn, pre=(conv,))")
        return self.multi_step(x)

    def multi_step(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes for input current ``[T, ...]``: charge, fire and reset at every step.

        On CUDA the built-in modes run as fused kernels (``spikedriven.fused``),
        which give the same fp32 spikes and gradients as the loop below.
        """
        if self.use_fused and type(self) in NEURONS.values() and fused_available(x):
            return fused_neuron(x, self.spec)
        v = torch.full_like(x[0], self.v_reset or 0.0)
        spikes = []
        for t in range(x.shape[0]):
            h = self.charge(v, x[t])
            spike = self.fire(h)
            v = self.reset(h, spike.detach() if self.detach_reset else spike)
            spikes.append(spike)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec.to_dict().items())


class LIFNeuron(SpikingNeuron):
    """Leaky integrate-and-fire, hard reset; the input is divided by tau too."""

    def __init__(self, spec: NeuronSpec):
        super().__init__(spec)
        self.tau = spec.tau

    def charge(self, v, x):
        if self.v_reset == 0.0:  # same arithmetic as the reference for V_reset = 0
            return v + (x - v) / self.tau
        return v + (x - (v - self.v_reset)) / self.tau

    def reset(self, h, spike):
        return (1.0 - spike) * h + spike * self.v_reset


class IFNeuron(SpikingNeuron):
    """Integrate-and-fire without leak, hard reset to V_reset."""

    def charge(self, v, x):
        return v + x

    def reset(self, h, spike):
        return (1.0 - spike) * h + spike * self.v_reset


class IFSoftNeuron(IFNeuron):
    """Integrate-and-fire without leak, soft reset: subtract the threshold."""

    def reset(self, h, spike):
        return h - spike * self.v_threshold


NEURONS: dict[str, type[SpikingNeuron]] = {"lif": LIFNeuron, "if": IFNeuron, "if_soft": IFSoftNeuron}

# -------------------------------------------------------------------- factory


def create_neuron(spec: Union[NeuronSpec, Mapping[str, Any], str], **overrides) -> SpikingNeuron:
    """Build a neuron layer, e.g. ``create_neuron({"mode": "if_soft", "v_threshold": 1.0})``."""
    spec = NeuronSpec.from_any(spec)
    if overrides:
        spec = spec.replace(**overrides)
    return NEURONS[spec.mode](spec)
