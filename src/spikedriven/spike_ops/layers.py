"""Spike inputs kept as bool (or uint8 for multi-level spikes) for backward, and the memory modes.

A spike tensor holds only 0 and 1 (or k / levels), so a convolution, a product or a max-pool keeps its
input as one byte and turns it back into the compute dtype when backward needs it; the callers pass
only spikes, unchecked, since a check would cost a device synchronisation per call. The package's
docstring gives the modes and what each saves.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..layer_settings import LayerSetting
from ..runtime import backward_memory_for


MEMORY_MODES = ("auto", "min", "lean", "full")


# What backward keeps in a layer that calls the operations here (its ``backward_memory``): "lean" the
# operations here, "min" them and recomputed convolutions, "full" the plain PyTorch ones, "auto" (a new
# layer's setting) lean on accelerators, where memory bounds the batch, and full on CPU, where the extra
# conversions and the recomputation cost more time than the memory is worth. A run sets its
# Runtime.backward_memory on its model with set_backward_memory(model, mode); memory_mode(model, mode)
# sets it within a block.
BACKWARD_MEMORY = LayerSetting("backward_memory", MEMORY_MODES, "memory mode")
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


class _SpikeConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, levels):
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
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


def spike_conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, levels=1,
                 memory="auto"):
    """``F.conv2d`` for a spike input ``x`` (values k / levels), keeping ``x`` in one byte for backward
    (``memory``: the layer's memory mode)."""
    if not _tracked(memory, x, weight, bias) or not x.is_floating_point():
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    pair = nn.modules.utils._pair
    return _SpikeConv2d.apply(x, weight, bias, pair(stride), pair(padding), pair(dilation), groups, levels)


class SpikeConv2d(nn.Conv2d):
    """A ``Conv2d`` whose input is always spikes (same parameters and state-dict keys);
    ``levels``: the spikes' levels (1: binary)."""

    def __init__(self, *args, levels: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = levels
        self.backward_memory = "auto"  # set_backward_memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return spike_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.levels,
                            self.backward_memory)


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


def spike_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, levels=1, memory="auto"):
    """``F.max_pool2d`` for a spike input, keeping the input in one byte and no indices."""
    stride = kernel_size if stride is None else stride
    if not _tracked(memory, x) or not x.is_floating_point():
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return _SpikeMaxPool2d.apply(x, kernel_size, stride, padding, dilation, ceil_mode, levels)


class SpikeMaxPool2d(nn.MaxPool2d):
    """A ``MaxPool2d`` whose input is always spikes (``levels``: their levels, 1 for binary)."""

    def __init__(self, *args, levels: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = levels
        self.backward_memory = "auto"  # set_backward_memory

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


def spike_mul(a: torch.Tensor, b: torch.Tensor, levels: int = 1, memory: str = "auto") -> torch.Tensor:
    """``a * b`` (broadcasting) for spikes ``a`` and ``b`` of ``levels`` levels, keeping both in one byte each."""
    if not _tracked(memory, a, b) or not (a.is_floating_point() and b.is_floating_point()):
        return a * b
    return _SpikeMul.apply(a, b, levels)


# ------------------------- (convolution,) batch norm, then neuron or max-pool


