"""Multi-level integer spikes (SDT-V3's ``Multispike``): no state, no threshold.

``S = floor(clamp(X, 0, D) + 1/2) / D`` with D levels: a following layer sees
values in {0, 1/D, ..., 1}; at inference a level k is k binary events, so a
layer fed by it costs D x mean(S) accumulations per dense MAC. Backward passes
the gradient of the rounding straight through where 0 < X < D (and the 1/D),
zero elsewhere.
"""

from __future__ import annotations

import torch

from .base import SpikingNeuron
from .registry import register_neuron
from .spec import Param, StepOps


class _RoundClamped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.levels = levels
        return torch.floor(torch.clamp(x, 0, levels) + 0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) & (x < ctx.levels)).to(grad.dtype), None


def _levels(value, settings):
    return None if 1 <= value <= 255 else "must lie in 1 .. 255 (levels are kept as uint8 for backward)"


@register_neuron
class Multispike(SpikingNeuron):
    name = "multispike"
    title = "Multi-level spikes (SDT-V3)"
    equations = "S = floor(clamp(X, 0, D) + 1/2) / D, no state;  dS/dX = 1/D where 0 < X < D, else 0"
    params = {"levels": Param(4, "spike levels D: S takes the values k / D, k = 0 .. D", kind=int, check=_levels)}
    # clamp: two comparisons and selects; + 1/2; the division by D (the rounding is a truncation of that sum)
    ops = StepOps(add=1, mul=1, compare=2, select=2)

    def output_levels(self) -> int:
        return self.levels

    def multi_step(self, x: torch.Tensor) -> torch.Tensor:
        return _RoundClamped.apply(x, self.levels) / self.levels  # stateless: every step at once
