"""Integrate-and-fire neurons: no leak, the potential keeps what it was given.

``if`` and ``if_soft`` are the study's IF with hard and soft reset;
``if_learnable`` is the study code's IF with a learnable threshold, here with
a surrogate gradient that reaches both the input and the threshold (the
study's version compares with ``>=`` and passes no gradient at all).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import ThresholdNeuron, below_threshold
from .registry import register_neuron
from .spec import FusedForm, Param, StepOps

# Per step: H = V + X; the comparison with u_th; a hard reset selects V_reset where a spike
# fired, a soft one subtracts u_th. V is read and written once.
_HARD_OPS = StepOps(add=1, compare=1, select=1, state_reads=1, state_writes=1)
_SOFT_OPS = StepOps(add=2, compare=1, state_reads=1, state_writes=1)


@register_neuron
class IF(ThresholdNeuron):
    name = "if"
    title = "IF, hard reset"
    equations = "H = V + X;  S = Θ(H - u_th);  V = H (1 - S) + V_reset S"
    params = {"v_reset": Param(0.0, "potential after a spike (hard reset), and at t = 0", check=below_threshold)}
    ops = _HARD_OPS

    def initial_potential(self) -> float:
        return self.v_reset

    def charge(self, v, x):
        return v + x

    def reset(self, h, spike):
        return (1.0 - spike) * h + spike * self.v_reset

    def fused_form(self):
        return FusedForm(v_reset=self.v_reset, v_threshold=self.v_threshold)


@register_neuron
class IFSoft(ThresholdNeuron):
    name = "if_soft"
    title = "IF, soft reset"
    equations = "H = V + X;  S = Θ(H - u_th);  V = H - u_th S"
    ops = _SOFT_OPS

    def charge(self, v, x):
        return v + x

    def reset(self, h, spike):
        return h - spike * self.v_threshold

    def fused_form(self):
        return FusedForm(soft_reset=True, v_threshold=self.v_threshold)


@register_neuron
class IFLearnable(ThresholdNeuron):
    """IF with a learnable threshold per layer: ``u_th = exp(theta)``, theta starting at ln(v_threshold).
    The spike's surrogate gives ``dS/dH`` and ``dS/du_th = -dS/dH``; a soft reset adds ``dV/du_th = -S``."""

    name = "if_learnable"
    title = "IF, learned threshold (soft reset; hard with v_reset)"
    equations = "u_th = exp(theta);  H = V + X;  S = Θ(H - u_th);  V = H - u_th S  (v_reset set: V = H (1 - S) + V_reset S)"
    params = {
        "v_threshold": Param(1.0, "initial threshold: theta starts at ln(v_threshold)",
                             check=lambda v, s: None if v > 0 else "must be > 0"),
        "v_reset": Param(None, "none: soft reset (subtract u_th); a number: hard reset to it", allow_none=True,
                         check=below_threshold),
    }
    ops = _SOFT_OPS

    def __init__(self, spec=None):
        super().__init__(spec)
        self.theta = nn.Parameter(torch.tensor(math.log(self.v_threshold)))

    def initial_potential(self) -> float:
        return 0.0 if self.v_reset is None else self.v_reset

    def threshold(self):
        return self.theta.exp()

    def charge(self, v, x):
        return v + x

    def reset(self, h, spike):
        if self.v_reset is None:
            return h - spike * self.threshold()
        return (1.0 - spike) * h + spike * self.v_reset

    def fused_form(self):
        soft = self.v_reset is None
        return FusedForm(v_reset=0.0 if soft else self.v_reset, soft_reset=soft, v_threshold=self.threshold())

    def learned(self) -> dict[str, float]:
        return {"v_threshold": float(self.theta.detach().exp())}
