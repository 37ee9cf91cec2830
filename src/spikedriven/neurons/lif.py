"""Leaky integrate-and-fire neurons: the potential decays toward V_reset between inputs.

The input is divided by tau too ("decay input", SpikingJelly's default), so a
constant input X settles the potential at X. Each charge is written with
SpikingJelly 0.0.0.0.14's operations in its order, so fp32 spikes match it bit
for bit (``tests/test_neurons.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import ThresholdNeuron, below_threshold
from .registry import register_neuron
from .spec import FusedForm, Param, StepOps

# Per step: (X - (V - V_reset)), its division by tau (a shift for tau = 2), + V; the comparison with u_th;
# then a hard reset selects V_reset where a spike fired, a soft one subtracts u_th. V is read and written once.
_HARD_OPS = StepOps(add=2, mul=1, compare=1, select=1, state_reads=1, state_writes=1)
_SOFT_OPS = StepOps(add=3, mul=1, compare=1, state_reads=1, state_writes=1)


def _tau(value, settings):
    return None if value >= 1 else "must be >= 1 (the leak factor 1 - 1/tau lies in [0, 1))"


TAU = Param(2.0, "membrane time constant: the potential keeps 1 - 1/tau of itself per step", check=_tau)
V_RESET = Param(0.0, "potential after a spike (hard reset), and at t = 0", check=below_threshold)


@register_neuron
class LIF(ThresholdNeuron):
    name = "lif"
    title = "LIF, hard reset"
    equations = "H = V + (X - (V - V_reset)) / tau;  S = Θ(H - u_th);  V = H (1 - S) + V_reset S"
    params = {"tau": TAU, "v_reset": V_RESET}
    ops = _HARD_OPS
    leaky = True

    def initial_potential(self) -> float:
        return self.v_reset

    def charge(self, v, x):
        if self.v_reset == 0.0:  # SpikingJelly's arithmetic for V_reset = 0
            return v + (x - v) / self.tau
        return v + (x - (v - self.v_reset)) / self.tau

    def reset(self, h, spike):
        return (1.0 - spike) * h + spike * self.v_reset

    def fused_form(self):
        return FusedForm(leak="divide", tau=self.tau, v_reset=self.v_reset, v_threshold=self.v_threshold)


@register_neuron
class LIFSoft(ThresholdNeuron):
    name = "lif_soft"
    title = "LIF, soft reset"
    equations = "H = V + (X - V) / tau;  S = Θ(H - u_th);  V = H - u_th S"
    params = {"tau": TAU}
    ops = _SOFT_OPS
    leaky = True

    def charge(self, v, x):
        return v + (x - v) / self.tau

    def reset(self, h, spike):
        return h - spike * self.v_threshold

    def fused_form(self):
        return FusedForm(leak="divide", tau=self.tau, soft_reset=True, v_threshold=self.v_threshold)


def _init_tau(value, settings):
    return None if value > 1 else "must be > 1 (w = -ln(tau - 1))"


@register_neuron
class PLIF(ThresholdNeuron):
    """Parametric LIF (Fang et al. 2021): the leak is learned, one scalar ``w`` per layer,
    ``k = sigmoid(w)`` in place of 1/tau; ``w`` starts at ``-ln(tau - 1)`` (0 for tau = 2).
    The state-dict key is ``<layer>.w``, as in the original SDT's PLIF checkpoints."""

    name = "plif"
    title = "PLIF (learned leak), hard reset"
    equations = "k = sigmoid(w);  H = V + (X - (V - V_reset)) k;  S = Θ(H - u_th);  V = H (1 - S) + V_reset S"
    params = {"tau": Param(2.0, "initial membrane time constant: w starts at -ln(tau - 1)", check=_init_tau),
              "v_reset": V_RESET}
    ops = _HARD_OPS
    leaky = True

    def __init__(self, spec=None):
        super().__init__(spec)
        self.w = nn.Parameter(torch.tensor(-math.log(self.tau - 1.0)))

    def initial_potential(self) -> float:
        return self.v_reset

    def charge(self, v, x):
        if self.v_reset == 0.0:  # SpikingJelly's arithmetic for V_reset = 0
            return v + (x - v) * self.w.sigmoid()
        return v + (x - (v - self.v_reset)) * self.w.sigmoid()

    def reset(self, h, spike):
        return (1.0 - spike) * h + spike * self.v_reset

    def fused_form(self):
        return FusedForm(leak="multiply", k=self.w.sigmoid(), v_reset=self.v_reset, v_threshold=self.v_threshold)

    def learned(self) -> dict[str, float]:
        return {"tau": float(1.0 / self.w.detach().sigmoid())}
