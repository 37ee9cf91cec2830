"""Surrogate gradients: the Heaviside step forward, a smooth stand-in for its derivative backward.

Each surrogate is defined once, by ``grad(g, x, alpha)``: the gradient ``g`` of
the loss with respect to the spike times ``dS/dx`` at ``x = H - u_th``. The
per-step loop's autograd function calls it, and so does the fused backward
(for every step at once, before its sweep over time), so both use the very
same arithmetic. ``alpha`` follows SpikingJelly 0.0.0.0.14's convention for
each surrogate, as do the defaults; each formula is written in SpikingJelly's
order of operations, so that fp32 gradients round alike.

A surrogate of your own: subclass ``Surrogate``, decorate it with
``@register_surrogate``, and name it in ``--surrogate``.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch

from ..errors import ConfigError, unknown_choice
from .spec import is_number

__all__ = ["SURROGATES", "Surrogate", "register_surrogate", "spike_function", "surrogate_class"]


class Surrogate:
    name: ClassVar[str]
    default_alpha: ClassVar[float]
    formula: ClassVar[str]  # dS/dx, for `spikedriven neurons`

    @staticmethod
    def grad(g: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
        raise NotImplementedError


SURROGATES: dict[str, type[Surrogate]] = {}
_SPIKE_FUNCTIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {}


def register_surrogate(cls: type[Surrogate]) -> type[Surrogate]:
    """Make ``cls`` available as ``--surrogate <cls.name>`` (its autograd function is built here)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"a surrogate needs a name that is an identifier, got {name!r}")
    if not is_number(getattr(cls, "default_alpha", None)):
        raise TypeError(f"surrogate {name!r} needs a numeric default_alpha")
    if name in SURROGATES and SURROGATES[name] is not cls:
        raise ValueError(f"a surrogate named {name!r} is registered already")

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
            ctx.save_for_backward(x)
            ctx.alpha = alpha
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad_output: torch.Tensor):
            (x,) = ctx.saved_tensors
            return cls.grad(grad_output, x, ctx.alpha), None

    Spike.__name__ = Spike.__qualname__ = f"{cls.__name__}Spike"
    SURROGATES[name] = cls
    _SPIKE_FUNCTIONS[name] = Spike.apply
    return cls


def spike_function(name: str) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``Θ(x)`` forward with surrogate ``name``'s gradient backward: ``fn(x, alpha)``."""
    surrogate_class(name)
    return _SPIKE_FUNCTIONS[name]


def surrogate_class(name: str) -> type[Surrogate]:
    try:
        return SURROGATES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"{unknown_choice('surrogate', name, SURROGATES)}; a surrogate of your own is loaded "
                          "with --plugins FILE") from None


@register_surrogate
class Sigmoid(Surrogate):
    """The derivative of ``sigmoid(alpha x)`` (SpikingJelly's ``Sigmoid``)."""

    name, default_alpha = "sigmoid", 4.0
    formula = "alpha sig(alpha x) (1 - sig(alpha x))"

    @staticmethod
    def grad(g, x, alpha):
        sg = torch.sigmoid(x * alpha)
        return g * (1.0 - sg) * sg * alpha


@register_surrogate
class ATan(Surrogate):
    """The derivative of ``atan(pi/2 alpha x) / pi + 1/2`` (SpikingJelly's ``ATan``)."""

    name, default_alpha = "atan", 2.0
    formula = "(alpha / 2) / (1 + (pi/2 alpha x)^2)"

    @staticmethod
    def grad(g, x, alpha):
        return alpha / 2 / (1 + (math.pi / 2 * alpha * x).pow(2)) * g


@register_surrogate
class PiecewiseQuadratic(Surrogate):
    """A triangle of height alpha and half-width 1/alpha (SpikingJelly's ``PiecewiseQuadratic``)."""

    name, default_alpha = "piecewise_quadratic", 1.0
    formula = "alpha - alpha^2 |x| for |x| <= 1/alpha, else 0"

    @staticmethod
    def grad(g, x, alpha):
        x_abs = x.abs()
        return (g * (-(alpha**2) * x_abs + alpha)).masked_fill(x_abs > (1 / alpha), 0)


@register_surrogate
class Erf(Surrogate):
    """The derivative of ``erfc(-alpha x) / 2`` (SpikingJelly's ``Erf``)."""

    name, default_alpha = "erf", 2.0
    formula = "alpha / sqrt(pi) exp(-(alpha x)^2)"

    @staticmethod
    def grad(g, x, alpha):
        return g * (-(x * alpha).pow(2)).exp() * (alpha / math.sqrt(math.pi))


@register_surrogate
class SoftSign(Surrogate):
    """The derivative of ``(alpha x / (1 + |alpha x|) + 1) / 2`` (SpikingJelly's ``SoftSign``)."""

    name, default_alpha = "soft_sign", 2.0
    formula = "1 / (2 alpha (1/alpha + |x|)^2)"

    @staticmethod
    def grad(g, x, alpha):
        return g / (2 * alpha * (1 / alpha + x.abs()).pow(2))


@register_surrogate
class Rect(Surrogate):
    """A rectangular window of height alpha and width 1/alpha (area 1, as the STBP rectangle).
    SpikingJelly 0.0.0.0.14 has no class of its own for it: its ``PiecewiseLeakyReLU(w, c=0)``
    is the same window at ``w = 1/(2 alpha)`` but returns twice its primitive's slope there."""

    name, default_alpha = "rect", 1.0
    formula = "alpha for |x| < 1/(2 alpha), else 0"

    @staticmethod
    def grad(g, x, alpha):
        return g * ((x.abs() < 1 / (2 * alpha)).to(g.dtype) * alpha)
