"""Spike inputs kept as bool (or uint8 for multi-level spikes) for backward, and the memory modes.

A spike tensor holds only 0 and 1 (or k / levels), so a convolution, a product or a max-pool keeps its
input as one byte and turns it back into the compute dtype when backward needs it; the callers pass
only spikes, unchecked, since a check would cost a device synchronisation per call. The package's
docstring gives the modes and what each saves.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn
from torch.autograd.function import once_differentiable

from ..layer_settings import LayerSetting
from . import expansion


MEMORY_MODES = ("auto", "min", "lean", "full")


def backward_memory_for(mode: str, device_type: str) -> str:
    """``min``, ``lean`` or ``full``. auto: lean on accelerators, where memory bounds the batch; full on
    CPU, where the extra conversions and the recomputation cost more time than the memory is worth."""
    if mode == "auto":
        return "full" if device_type == "cpu" else "lean"
    return mode


# What backward keeps in a layer that calls the operations here (its ``backward_memory``): "lean" the
# operations here, "min" them and recomputed convolutions, "full" the plain PyTorch ones, "auto" (a new
# layer's setting) as backward_memory_for decides on the device of each call. A class whose layers call
# the operations declares the setting with @holds_backward_memory. A run sets its Runtime.backward_memory
# on its model with set_backward_memory(model, mode); memory_mode(model, mode) sets it within a block.
BACKWARD_MEMORY = LayerSetting("backward_memory", MEMORY_MODES, "memory mode", default="auto")
holds_backward_memory = BACKWARD_MEMORY.held_by
set_backward_memory = BACKWARD_MEMORY.set
memory_mode = BACKWARD_MEMORY.within


def keep_full_tensors(module: nn.Module):
    """The plain PyTorch operations in ``module`` within this block (the reference)."""
    return memory_mode(module, "full")


def saved_tensor_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``fn()`` runs
    (activations, and parameters that backward needs): the memory a training step
    holds between forward and backward, measured the same way on every device."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        # holding the storage keeps its address from being reused by a later one during fn()
        storages[(storage.device, storage.data_ptr())] = storage
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storage.nbytes() for storage in storages.values())


def _active_mode(memory: str, *tensors: Optional[torch.Tensor]) -> str:
    """The memory mode of a call on ``tensors`` in a layer set to ``memory``: ``"full"`` unless autograd
    records the call."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors):
        return "full"
    return backward_memory_for(memory, tensors[0].device.type)


def _tracked(memory: str, *tensors: Optional[torch.Tensor]) -> bool:
    """Whether the lean version of an operation applies (in the lean and min modes)."""
    return _active_mode(memory, *tensors) != "full"


def _pack(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Spikes in one byte each: bool for binary spikes, the uint8 level k of a multi-level spike
    k / levels; beyond 255 levels the tensor itself."""
    if levels == 1:
        return x.to(torch.bool)
    return (x * levels).round().to(torch.uint8) if levels <= 255 else x


def _unpack(packed: torch.Tensor, dtype: torch.dtype, levels: int = 1) -> torch.Tensor:
    # .to keeps the memory format (channels_last stays channels_last); k / levels is the
    # division the neuron made, so the values come back bit for bit
    if packed.dtype == torch.uint8:
        return packed.to(dtype) / levels
    return packed.to(dtype)


# ------------------------------------------------------------- convolution


_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d}  # by the number of spatial axes


class _SpikeConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, levels):
        out = _CONVOLUTIONS[len(stride)](x, weight, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(_pack(x, levels), weight)
        # under autocast the convolution ran in out.dtype; backward repeats that
        ctx.conf = (stride, padding, dilation, groups)
        ctx.levels = levels
        ctx.dtypes = (x.dtype, out.dtype)
        ctx.bias_shape = None if bias is None else list(bias.shape)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        packed, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        in_dtype, compute = ctx.dtypes
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out.to(compute),
            _unpack(packed, in_dtype, ctx.levels).to(compute),
            weight.to(compute),
            ctx.bias_shape,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0] * len(stride),
            groups,
            [needs_x, needs_w, needs_b],
        )
        if grad_x is not None:
            grad_x = grad_x.to(in_dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None, None


def _spike_conv(x, weight, bias, stride, padding, dilation, groups, levels, memory, expand):
    """``F.conv1d`` / ``F.conv2d`` (by ``weight``'s rank) for a spike input, keeping it in one byte for backward;
    ``expand`` repeats a scalar stride, padding or dilation over the spatial axes."""
    if not _tracked(memory, x, weight, bias) or not x.is_floating_point():
        return _CONVOLUTIONS[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)
    return _SpikeConv.apply(x, weight, bias, expand(stride), expand(padding), expand(dilation), groups, levels)


@register_notrace_function  # branches on its input's requires_grad and dtype: torch.fx records the call
def spike_conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, levels=1,
                 memory="auto"):
    """``F.conv2d`` for a spike input ``x`` (values k / levels), keeping ``x`` in one byte for backward
    (``memory``: the layer's memory mode)."""
    return _spike_conv(x, weight, bias, stride, padding, dilation, groups, levels, memory, nn.modules.utils._pair)


@register_notrace_function  # branches on its input's requires_grad and dtype: torch.fx records the call
def spike_conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, levels=1, memory="auto"):
    """``F.conv1d`` for a spike input ``x`` ``[N, C, L]``, keeping ``x`` in one byte for backward."""
    return _spike_conv(x, weight, bias, stride, padding, dilation, groups, levels, memory, nn.modules.utils._single)


@holds_backward_memory
class _SpikeInputConv:
    """A convolution whose input is always spikes (the same parameters and state-dict keys as its torch class);
    ``levels``: the spikes' levels (1: binary)."""

    _spike_fn: Callable  # the spike convolution of its rank

    def __init__(self, *args, levels: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return type(self)._spike_fn(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                                    self.levels, self.backward_memory)


class SpikeConv2d(_SpikeInputConv, nn.Conv2d):
    """A ``Conv2d`` whose input is always spikes (same parameters and state-dict keys);
    ``levels``: the spikes' levels (1: binary)."""

    _spike_fn = staticmethod(spike_conv2d)


class SpikeConv1d(_SpikeInputConv, nn.Conv1d):
    """A ``Conv1d`` whose input is always spikes (same parameters and state-dict keys);
    ``levels``: the spikes' levels (1: binary)."""

    _spike_fn = staticmethod(spike_conv1d)


# ------------------------------------------------------------------ linear


class _SpikeLinear(torch.autograd.Function):
    """``F.linear`` of a contiguous spike input. For such an input PyTorch folds it to two dimensions and
    runs one matrix product (addmm with a bias); backward runs what autograd runs for that product, in
    the same order and on the same layouts, so the gradients are identical to ``F.linear``'s."""

    @staticmethod
    def forward(ctx, x, weight, bias, levels):
        out = F.linear(x, weight, bias)
        ctx.save_for_backward(_pack(x, levels), weight)
        # under autocast the product ran in out.dtype; backward repeats that
        ctx.levels, ctx.dtypes = levels, (x.dtype, out.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        packed, weight = ctx.saved_tensors
        in_dtype, compute = ctx.dtypes
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grad = grad_out.to(compute).reshape(-1, grad_out.shape[-1])  # a copy where grad_out is not contiguous
        grad_x = grad_w = grad_b = None
        if needs_x:
            grad_x = grad.mm(weight.to(compute)).view(packed.shape).to(in_dtype)
        if needs_w:
            x = _unpack(packed, in_dtype, ctx.levels).to(compute)
            grad_w = grad.t().mm(x.reshape(-1, x.shape[-1])).to(weight.dtype)
        if needs_b:
            grad_b = grad.sum(0, keepdim=True).view(-1).to(weight.dtype)
        return grad_x, grad_w, grad_b, None


@register_notrace_function  # branches on its input's requires_grad, dtype and layout: torch.fx records the call
def spike_linear(x, weight, bias=None, levels=1, memory="auto"):
    """``F.linear`` for a spike input ``x`` ``[..., in_features]``, keeping ``x`` in one byte for backward."""
    # a non-contiguous input takes another path through PyTorch (a copy, then a product without the bias)
    if not _tracked(memory, x, weight, bias) or not x.is_floating_point() or not x.is_contiguous() or x.dim() < 2:
        return F.linear(x, weight, bias)
    return _SpikeLinear.apply(x, weight, bias, levels)


@holds_backward_memory
class SpikeLinear(nn.Linear):
    """A ``Linear`` whose input is always spikes (same parameters and state-dict keys); ``levels``: the
    spikes' levels (1: binary). It acts on the last axis, so ``norm_then`` gives it ``[T, B, ..., D]``
    as it is (``time_major``)."""

    time_major = True

    def __init__(self, *args, levels: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spike_linear(x, self.weight, self.bias, self.levels, self.backward_memory)


# ---------------------------------------------------------------- max-pool


class _SpikeMaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode, levels):
        ctx.conf = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.dtype, ctx.levels = x.dtype, levels
        ctx.save_for_backward(_pack(x, levels))
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        x = _unpack(packed, ctx.dtype, ctx.levels)
        # the indices are recomputed from the input instead of kept (int64, 8 bytes each)
        _, indices = F.max_pool2d(x, *ctx.conf, return_indices=True)
        grad = torch.ops.aten.max_pool2d_with_indices_backward(grad_out, x, *map(_as_list, ctx.conf[:4]), ctx.conf[4], indices)
        return grad, None, None, None, None, None, None


def _as_list(value):
    return list(nn.modules.utils._pair(value))


@register_notrace_function  # branches on its input's requires_grad and dtype: torch.fx records the call
def spike_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, levels=1, memory="auto"):
    """``F.max_pool2d`` for a spike input, keeping the input in one byte and no indices."""
    stride = kernel_size if stride is None else stride
    if not _tracked(memory, x) or not x.is_floating_point():
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return _SpikeMaxPool2d.apply(x, kernel_size, stride, padding, dilation, ceil_mode, levels)


@holds_backward_memory
class SpikeMaxPool2d(nn.MaxPool2d):
    """A ``MaxPool2d`` whose input is always spikes (``levels``: their levels, 1 for binary)."""

    def __init__(self, *args, levels: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices:
            return super().forward(x)
        return spike_max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                                self.levels, self.backward_memory)


# ----------------------------------------------------------------- product


class _SpikeMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, levels):
        ctx.dtypes, ctx.levels = (a.dtype, b.dtype), levels
        ctx.save_for_backward(_pack(a, levels), _pack(b, levels))
        return a * b

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        packed_a, packed_b = ctx.saved_tensors
        dtype_a, dtype_b = ctx.dtypes
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (grad * _unpack(packed_b, dtype_b, ctx.levels)).sum_to_size(packed_a.shape).to(dtype_a)
        if ctx.needs_input_grad[1]:
            grad_b = (grad * _unpack(packed_a, dtype_a, ctx.levels)).sum_to_size(packed_b.shape).to(dtype_b)
        return grad_a, grad_b, None


@register_notrace_function  # branches on its inputs' requires_grad and dtype: torch.fx records the call
def spike_mul(a: torch.Tensor, b: torch.Tensor, levels: int = 1, memory: str = "auto") -> torch.Tensor:
    """``a * b`` (broadcasting) for spikes ``a`` and ``b`` of ``levels`` levels, keeping both in one byte each."""
    if levels > 1 and expansion.watching():  # an operation count prices these products in its expanded view
        expansion.note_mul(torch.broadcast_shapes(a.shape, b.shape), levels)
    if levels > 1 and expansion.expanding():
        return expansion.expanded_mul(a, b, levels)
    if not _tracked(memory, a, b) or not (a.is_floating_point() and b.is_floating_point()):
        return a * b
    return _SpikeMul.apply(a, b, levels)


# ------------------------- (convolution,) batch norm, then neuron or max-pool


