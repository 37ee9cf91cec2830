"""Multi-level integer spikes (SDT-V3's ``Multispike``): no state, no threshold.

``S = round(clamp(X, 0, D)) / D`` with D levels: a following layer sees values
in {0, 1/D, ..., 1}; at inference a level k is k binary events, so a layer fed
by it costs D x mean(S) accumulations per dense MAC. Backward passes the
gradient of the rounding straight through inside a window (and the 1/D), zero
outside it.

Two settings tell the published variants apart, and they matter: SDT-V3's
attention produces exact x.5 inputs often (products of k/D spikes times a
power-of-two scale), so the rounding of ties changes its logits.

* ``rounding``: ``half_up``, ``floor(x + 1/2)`` (ties go up; the default, and
  SDT-V3's large models), or ``half_even``, ties to the even integer as
  ``torch.round`` does (SDT-V3's base models, E-SpikeFormer).
* ``gradient_window``: ``open``, the gradient passes where ``0 < X < D`` (the
  default), or ``closed``, where ``0 <= X <= D`` (E-SpikeFormer).
"""

from __future__ import annotations

import torch

from .base import SpikingNeuron
from .registry import register_neuron
from .spec import Param, StepOps

ROUNDINGS = ("half_up", "half_even")
GRADIENT_WINDOWS = ("open", "closed")


class _RoundClamped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: int, half_even: bool, closed: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.levels, ctx.closed = levels, closed
        clamped = torch.clamp(x, 0, levels)
        return torch.round(clamped) if half_even else torch.floor(clamped + 0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        inside = (x >= 0) & (x <= ctx.levels) if ctx.closed else (x > 0) & (x < ctx.levels)
        return grad * inside.to(grad.dtype), None, None, None


def _levels(value, settings):
    return None if 1 <= value <= 255 else "must lie in 1 .. 255 (levels are kept as uint8 for backward)"


def _one_of(choices):
    def check(value, settings):
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


@register_neuron
class Multispike(SpikingNeuron):
    name = "multispike"
    title = "Multi-level spikes (SDT-V3)"
    equations = ("S = round(clamp(X, 0, D)) / D, no state (round: half_up floor(x + 1/2), or half_even);  "
                 "dS/dX = 1/D where 0 < X < D (open window) or 0 <= X <= D (closed), else 0")
    params = {
        "levels": Param(4, "spike levels D: S takes the values k / D, k = 0 .. D", kind=int, check=_levels),
        "rounding": Param("half_up", "ties of the rounding: half_up (floor(x + 1/2)) or half_even (torch.round, "
                          "E-SpikeFormer's)", kind=str, check=_one_of(ROUNDINGS)),
        "gradient_window": Param("open", "where the gradient passes: open, 0 < X < D, or closed, 0 <= X <= D "
                                 "(E-SpikeFormer's)", kind=str, check=_one_of(GRADIENT_WINDOWS)),
    }
    # clamp: two comparisons and selects; the rounding (an add, for half_up); the division by D
    ops = StepOps(add=1, mul=1, compare=2, select=2)

    def output_levels(self) -> int:
        return self.levels

    def multi_step(self, x: torch.Tensor) -> torch.Tensor:
        counts = _RoundClamped.apply(x, self.levels, self.rounding == "half_even", self.gradient_window == "closed")
        return counts / self.levels  # stateless: every step at once
