"""Batch norm, then neuron or max-pool (``norm_then``): backward recomputes the normalised tensor and what
follows it from the batch norm's input instead of keeping them; with ``pre`` layers in the min mode, the
convolution too, from its spike input. ``norm_neuron``: the same with a neuron layer, called as a module
once per call (its hooks, its spike tally), its parameters differentiated."""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterator, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call

from .layers import SpikeConv1d, SpikeConv2d, SpikeLinear, SpikeMaxPool2d, _active_mode, _pack, _unpack

# layers whose input is always spikes, of their ``levels``
SPIKE_FED = (SpikeConv2d, SpikeConv1d, SpikeLinear, SpikeMaxPool2d)

_RECOMPUTATION = threading.local()


def recomputing() -> bool:
    """True while backward recomputes a forward (``norm_then``'s ``fn``): a layer that ``fn`` calls as a
    module (so that its hooks and spike counts see it) is called there a second time, and should not
    count its output again. Never under ``torch.compile``, where ``norm_then`` recomputes nothing."""
    return not torch.compiler.is_compiling() and getattr(_RECOMPUTATION, "depth", 0) > 0


@contextlib.contextmanager
def _recomputation() -> Iterator[None]:
    _RECOMPUTATION.depth = getattr(_RECOMPUTATION, "depth", 0) + 1
    try:
        yield
    finally:
        _RECOMPUTATION.depth -= 1


@register_notrace_function  # unpacks its input's shape: torch.fx records the call
def per_step(layers: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply frame-wise layers to ``[T, B, ...]`` by folding time into the batch."""
    t, b = x.shape[:2]
    y = layers(x.flatten(0, 1))
    return y.reshape(t, b, *y.shape[1:])


def _pre(layers: Sequence[nn.Module], x: torch.Tensor, params: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """``layers`` applied frame-wise to ``x`` (``x`` itself when there are none); with ``params``
    (theirs, in ``parameters()`` order) in place of their own. Layers that act on the last axes only
    (a linear layer, a transpose of the last two) say so with ``time_major = True``; a chain of only
    such layers takes ``[T, B, ...]`` as it is, without folding time into the batch."""
    if not layers:
        return x
    if all(getattr(layer, "time_major", False) for layer in layers):
        return _chain(layers, params)(x)
    return per_step(_chain(layers, params), x)


def _chain(layers: Sequence[nn.Module], params: Optional[Sequence[torch.Tensor]] = None):
    """``layers`` applied in order; with ``params`` (theirs, in ``parameters()`` order) in place of their own."""

    def apply(z: torch.Tensor) -> torch.Tensor:
        remaining = iter(params) if params is not None else None
        for layer in layers:
            if remaining is None:
                z = layer(z)
            else:
                names = [name for name, _ in layer.named_parameters()]
                z = functional_call(layer, {name: next(remaining) for name in names}, (z,))
        return z

    return apply


def _spike_levels_in(layers: Sequence[nn.Module]) -> int:
    """The levels of the spikes the first layer that does something only ever sees (0: not spikes)."""
    for layer in layers:
        if not isinstance(layer, nn.Identity):
            return layer.levels if isinstance(layer, SPIKE_FED) else 0
    return 0


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def _identity(y: torch.Tensor) -> torch.Tensor:
    return y


class _NormThen(torch.autograd.Function):
    """``fn(norm(pre(x)))`` keeping only ``x`` (in one byte when it is spikes) for backward.

    Without it, backward holds the batch norm's input and what ``fn`` keeps
    (a neuron's potentials, a max-pool's input and indices), at least two
    tensors of the batch norm's size. Backward recomputes them from ``x``
    (cheap element-wise work, plus the ``pre`` layers: a convolution) with the
    same calls as forward, so values and gradients are identical.
    ``params`` are the parameters of the ``pre`` layers (the first ``n_pre``)
    and of ``fn`` (a neuron's learnable leak or threshold), passed in so that
    autograd hands their gradients back here.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, norm, fn, pre, levels_in, n_pre, *params):
        z = _pre(pre, x)
        y = norm(z.flatten(0, 1)).reshape(z.shape)  # the module call: running statistics move once
        ctx.save_for_backward(_pack(x, levels_in) if levels_in else x, weight, bias, *params)
        ctx.norm, ctx.fn, ctx.pre, ctx.x_dtype, ctx.levels_in, ctx.n_pre = norm, fn, pre, x.dtype, levels_in, n_pre
        ctx.autocast = _autocast_state(x.device.type)
        return fn(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        kept, weight, bias, *params = ctx.saved_tensors
        norm, n_pre = ctx.norm, ctx.n_pre
        device_type, enabled, dtype = ctx.autocast
        needs = ctx.needs_input_grad
        x = _unpack(kept, ctx.x_dtype, ctx.levels_in) if ctx.levels_in else kept
        # the pre layers' parameters are swapped for leaves; fn's own parameters are used as they are
        leaves = [
            None if t is None else t.detach().requires_grad_(bool(need))
            for t, need in zip([x, weight, bias, *params[:n_pre]], [*needs[:3], *needs[8:8 + n_pre]])
        ]
        x, weight, bias, *pre_params = leaves
        fn_params = [p if need else None for p, need in zip(params[n_pre:], needs[8 + n_pre:])]

        def copy(stat):  # the same kernel as forward, without moving the module's statistics again
            return None if stat is None else stat.clone()

        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled), _recomputation():
            z = _pre(ctx.pre, x, pre_params)
            y = F.batch_norm(z.flatten(0, 1), copy(norm.running_mean), copy(norm.running_var), weight, bias,
                             True, 0.0, norm.eps)
            out = ctx.fn(y.reshape(z.shape))
        inputs = [*leaves, *fn_params]
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        grads = [next(grads) if t is not None and t.requires_grad else None for t in inputs]
        return (*grads[:3], None, None, None, None, None, *grads[3:])


@register_notrace_function  # branches on its inputs' requires_grad: torch.fx records the call
def norm_then(
    x: torch.Tensor,
    norm: nn.BatchNorm2d,
    fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    pre: Sequence[nn.Module] = (),
    fn_params: Sequence[torch.Tensor] = (),
    memory: str = "auto",
) -> torch.Tensor:
    """``fn(norm(pre(x)))`` for ``x`` ``[T, B, ...]``: the ``pre`` layers (a convolution,
    a max-pool before it) frame-wise, then the batch norm over ``[T*B, C, H, W]``.

    ``fn`` maps the normalised ``[T, B, C, H, W]`` to one tensor (a neuron's
    spikes, a max-pool); None is the identity; ``fn_params`` are the parameters
    ``fn`` uses (a learnable neuron's). In training with autograd, backward
    recomputes the batch norm and ``fn`` instead of keeping their outputs (see
    ``_NormThen``); in the ``"min"`` memory mode it recomputes the ``pre``
    layers too and keeps only ``x`` (``memory``: the calling layer's memory mode). Under ``torch.compile`` the compiler makes
    that choice itself, so the plain composition is traced.
    """
    pre, fn_params = tuple(pre), list(fn_params)
    mode, params = "full", []
    if norm.training and not torch.compiler.is_compiling():  # evaluation skips gathering the parameters
        params = [p for layer in pre for p in layer.parameters()]
        mode = _active_mode(memory, x, norm.weight, norm.bias, *params, *fn_params)
    if mode == "min" and pre:
        return _NormThen.apply(x, norm.weight, norm.bias, norm, fn or _identity, pre, _spike_levels_in(pre), len(params),
                               *params, *fn_params)
    z = _pre(pre, x)
    if mode == "full" or fn is None:  # a batch norm alone keeps its input either way
        y = norm(z.flatten(0, 1)).reshape(z.shape)
        return y if fn is None else fn(y)
    return _NormThen.apply(z, norm.weight, norm.bias, norm, fn, (), 0, 0, *fn_params)


class Neuron(Protocol):
    """What ``norm_neuron`` needs of a neuron layer (``spikedriven.neurons.SpikingNeuron``): called as a module it
    maps an input current ``[T, ...]`` to spikes (its hooks run, it counts its spikes for a recorder);
    ``multi_step`` computes the same spikes without either; ``parameters`` are its learnable settings."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def multi_step(self, x: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def _fire(neuron: Neuron, y: torch.Tensor) -> torch.Tensor:
    # called as a module, so that its hooks and spike tally see it, except when backward recomputes it
    return neuron.multi_step(y) if recomputing() else neuron(y)


@register_notrace_function  # it hands norm_then a function, which a graph cannot hold: torch.fx records the call
def norm_neuron(
    x: torch.Tensor,
    norm: nn.Module,
    neuron: Neuron,
    pre: Sequence[nn.Module] = (),
    memory: str = "auto",
) -> torch.Tensor:
    """The spikes of ``neuron`` for the input current ``norm(pre(x))``, ``x`` ``[T, B, ...]``: the ``pre``
    layers (a convolution, a max-pool before it) and the batch norm frame-wise, as ``norm_then`` applies them.

    The neuron is called as a module once per call, on the normalised current, so that its forward hooks
    run and its spike tally counts these spikes once; when backward recomputes the chain (``memory``, the
    calling layer's memory mode: lean and min in training) it runs the neuron's steps alone. The neuron's
    parameters (a learnable leak or threshold) get their gradients through the recomputation.
    """
    return norm_then(x, norm, functools.partial(_fire, neuron), pre, fn_params=tuple(neuron.parameters()),
                     memory=memory)
