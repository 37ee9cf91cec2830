"""The base of every neuron: charge, fire, reset over the time steps of one input.

A neuron runs multi-step over the leading time axis of its input ``[T, ...]``.
Its membrane potential starts afresh in every call, so nothing leaks from one
batch into the next and no ``reset_net`` is needed. At every step:

    H[t] = charge(V[t-1], X[t]);  S[t] = fire(H[t]);  V[t] = reset(H[t], S[t])

A neuron family is a subclass that declares its settings (``params``), its
equations (for ``spikedriven neurons``), its cost per step (``ops``) and its
``charge`` / ``reset``; ``ThresholdNeuron`` fires ``Θ(H - u_th)`` with a
surrogate gradient. A family whose arithmetic the fused kernels cover says so
in ``fused_form()``; on CUDA it then runs there (the same spikes in fp32),
elsewhere and otherwise the loop below runs.

A neuron's ``forward(x)`` is its activation alone: input current in, spikes
out. The layers before it (a convolution, a batch norm) are the caller's;
``spikedriven.spike_ops.norm_neuron(x, norm, neuron, pre, memory)`` fuses them
with a neuron and chooses what backward keeps (``memory``: the calling layer's
memory mode).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import torch
from timm.layers import register_notrace_module
from torch import nn

from ..errors import ConfigError, did_you_mean
from ..layer_settings import LayerSetting
from .fused import fused_available, fused_multi_step
from .spec import BinaryOps, FusedForm, NeuronSpec, Param, StepOps, is_number
from .surrogates import SURROGATES, spike_function, surrogate_class

__all__ = ["NEURON_PATHS", "SpikingNeuron", "ThresholdNeuron", "neuron_path", "set_neuron_path"]

# how a neuron layer runs its T steps: "fused", the fused kernels where they can run (CUDA) and the loop
# elsewhere; "loop", the per-step PyTorch reference everywhere (checks and benchmarks compare the two)
NEURON_PATHS = ("fused", "loop")
# the setting every neuron layer holds: set_neuron_path(model, "loop"), or for one block neuron_path(model, "loop")
NEURON_PATH = LayerSetting("neuron_path", NEURON_PATHS, "neuron path", default="fused")


@NEURON_PATH.held_by  # every neuron layer holds a neuron_path, "fused" until set
@register_notrace_module  # torch.fx records a neuron as one call: its steps are a Python loop over T
class SpikingNeuron(nn.Module):
    """Base class; a family defines ``charge`` and ``reset`` (or a whole ``multi_step``)."""

    name: ClassVar[str] = ""  # the registered name: --spike-mode <name>
    title: ClassVar[str] = ""  # a few words for tables: "IF, soft reset"
    equations: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}  # this class's own settings; subclasses add theirs
    removes: ClassVar[tuple[str, ...]] = ()  # inherited settings this class does not take
    ops: ClassVar[StepOps] = StepOps()
    leaky: ClassVar[bool] = False  # the potential decays between inputs (the study's LIF side)
    # A multi-level neuron (output_levels() = D > 1) run spike-driven sends its level k as k binary spikes
    # over D sub-steps; the energy models' expanded view prices its step as D x sub_step + step. The default
    # is an IF neuron with soft reset charged once with X + 1/2, so that it fires round(X) times: per
    # sub-step the compare with the threshold and the subtraction of a fired spike, its potential read and
    # written; once per step the 1/2 added and the clamp to [0, D] (two compares, two selects) that the
    # integer neuron computes (the D sub-steps would bound the count by themselves: an upper bound). Ties
    # rounded to even would take one more compare, not priced. Binary neurons never use it.
    binary_ops: ClassVar[BinaryOps] = BinaryOps(sub_step=StepOps(add=1, compare=1, state_reads=1, state_writes=1),
                                                step=StepOps(add=1, compare=2, select=2))

    # probe(t, h, spike, v) after every step, set per instance by a recorder (analysis.membrane);
    # while set the loop runs, since the fused kernels never materialise H
    _membrane_probe = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # torchvision's tracer takes a registered class's subclasses as leaves too; timm's own check wants each
        register_notrace_module(cls)

    # -------------------------------------------------------------- settings
    @classmethod
    def settings(cls) -> dict[str, Param]:
        """Every setting this neuron takes, base classes' first."""
        out: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            own = vars(klass)
            for name in own.get("removes", ()):
                out.pop(name, None)
            out.update(own.get("params", {}))
        return out

    @classmethod
    def resolve(cls, given: Mapping[str, Any]) -> dict:
        """All settings: ``given`` (checked) over the defaults; one clear sentence for a bad one."""
        settings = cls.settings()
        unknown = [k for k in given if k not in settings]
        if unknown:
            raise ConfigError(
                f"neuron {cls.name!r} takes no setting {', '.join(unknown)}{did_you_mean(unknown[0], settings)}; "
                f"its settings are "
                f"{', '.join(settings) or 'none'} (spikedriven neurons lists every neuron's)"
            )
        values = {}
        for key, param in settings.items():
            try:
                values[key] = param.coerce(given.get(key, param.default))
            except ValueError as e:
                raise ConfigError(f"neuron {cls.name!r}: {key} {e}, got {given.get(key)!r}") from None
        for key, param in settings.items():
            problem = param.check(values[key], values) if param.check and values[key] is not None else None
            if problem:
                raise ConfigError(f"neuron {cls.name!r}: {key} {problem}, got {values[key]!r}")
        return values

    def __init__(self, spec: Optional[NeuronSpec] = None):
        super().__init__()
        spec = spec if spec is not None else NeuronSpec(self.name)  # IF() is an IF layer with the defaults
        self.spec = NeuronSpec(spec.mode, **self.resolve(spec.params))
        for key, value in self.spec.params.items():
            setattr(self, key, value)
        # set by a SpikeRecorder: each forward then leaves its spike counts in spike_tally (see tally)
        self.tally_spikes = False
        self.spike_tally: Optional[torch.Tensor] = None

    # --------------------------------------------------------------- dynamics
    def initial_potential(self) -> float:
        return 0.0

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self, h: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fused_form(self) -> Optional[FusedForm]:
        """This neuron as the fused kernels' numbers, or None: it has no fused form."""
        return None

    def output_levels(self) -> int:
        """Spikes take the values k / levels, k = 0 .. levels (1: binary spikes)."""
        return 1

    def learned(self) -> dict[str, float]:
        """The current values of learnable settings, as the user reads them (a tau, a threshold)."""
        return {}

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: input current ``[T, ...]``; returns spikes of the same shape and dtype.

        While a recorder asks for it (``tally_spikes``), the spikes of each call are counted into
        ``spike_tally``. A batch norm (after a convolution) that feeds the neuron is fused with it by
        ``spikedriven.spike_ops.norm_neuron``, which calls the neuron as a module once per call.
        """
        spikes = self.multi_step(x)
        if self.tally_spikes:
            tally = self.tally(spikes)
            # a layer called twice in one forward adds up; its recorder takes the sum after each forward
            self.spike_tally = tally if self.spike_tally is None else self.spike_tally + tally
        return spikes

    def tally(self, spikes: torch.Tensor) -> torch.Tensor:
        """``[T + 1]`` float64: the spikes of each step (a multi-level spike k / levels counts as k events),
        then the neurons a step holds. Counted in the forward and left as an attribute, never read back in
        it, so that a compiled model counts inside its graph (even as a CUDA graph) and a recorder sums the
        tallies between forwards."""
        per_step = spikes.detach().flatten(1).sum(1, dtype=torch.float64)
        levels = self.output_levels()
        if levels != 1:
            per_step = per_step * levels
        return torch.cat([per_step, per_step.new_full((1,), spikes[0].numel())])

    def multi_step(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes for input current ``[T, ...]``: the fused kernels where they run, else the loop."""
        form = self.fused_form() if self.neuron_path == "fused" and self._membrane_probe is None else None
        if form is not None and fused_available(x):
            return fused_multi_step(x, form, **self.fused_gradient())
        return self.loop(x)

    def fused_gradient(self) -> dict:
        """How the fused backward differentiates the spike (a surrogate's name and alpha, the reset)."""
        raise NotImplementedError(f"neuron {self.name!r} declares a fused form but no surrogate")

    def loop(self, x: torch.Tensor) -> torch.Tensor:
        """The reference: charge, fire and reset at every step, in plain PyTorch."""
        v = torch.full_like(x[0], self.initial_potential())
        detach = getattr(self, "detach_reset", True)
        probe = self._membrane_probe
        spikes = []
        for t in range(x.shape[0]):
            h = self.charge(v, x[t])
            spike = self.fire(h)
            v = self.reset(h, spike.detach() if detach else spike)
            if probe is not None:
                probe(t, h, spike, v)
            spikes.append(spike)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec.params.items())


def _positive(value, settings) -> Optional[str]:
    return None if value > 0 else "must be > 0"


def _known_surrogate(value, settings) -> Optional[str]:
    surrogate_class(value)  # an unknown name is the registry's sentence, with its closest match
    return None


class ThresholdNeuron(SpikingNeuron):
    """Fires ``S = Θ(H - u_th)``, ``Θ(x) = 1 if x >= 0``, with a surrogate gradient backward."""

    params = {
        "v_threshold": Param(1.0, "firing threshold u_th", check=_positive),
        "surrogate": Param("sigmoid", "surrogate gradient of the spike", kind=str, check=_known_surrogate),
        "surrogate_alpha": Param(None, "surrogate sharpness (none: the surrogate's own default, sigmoid 4)",
                                 allow_none=True, check=_positive),
        "detach_reset": Param(True, "no gradient through the reset", kind=bool),
    }

    @classmethod
    def resolve(cls, given: Mapping[str, Any]) -> dict:
        values = super().resolve(given)
        if values["surrogate_alpha"] is None:  # resolved here, so that a checkpoint records the alpha used
            values["surrogate_alpha"] = SURROGATES[values["surrogate"]].default_alpha
        return values

    def __init__(self, spec: Optional[NeuronSpec] = None):
        super().__init__(spec)
        self._spike = spike_function(self.surrogate)

    def threshold(self) -> Any:
        """u_th now: a number, or a tensor for a learnable threshold."""
        return self.v_threshold

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        return self._spike(h - self.threshold(), self.surrogate_alpha)

    def fused_gradient(self) -> dict:
        return dict(surrogate=SURROGATES[self.surrogate], alpha=self.surrogate_alpha, detach_reset=self.detach_reset)


def below_threshold(value, settings) -> Optional[str]:
    """For a hard reset's V_reset: below the (initial) threshold, else every step would fire."""
    if not is_number(value):
        return "must be a number"
    return None if value < settings.get("v_threshold", float("inf")) else "must lie below v_threshold"


set_neuron_path = NEURON_PATH.set
neuron_path = NEURON_PATH.within
