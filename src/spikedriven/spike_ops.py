"""Autograd operations for spiking layers that keep less for the backward pass.

* Spike inputs as bool. A convolution, a product or a max-pool keeps its
  input for backward. A spike tensor holds only 0 and 1, so it is kept as
  ``torch.bool`` (1 byte instead of 4 for fp32) and turned back into the
  compute dtype when backward needs it. The model calls these only on neuron
  outputs and on pools or products of them, which are binary by
  construction; the functions do not check it, as a check would cost a device
  synchronisation on every call.
* Batch norm, then neuron or max-pool (``norm_then``): backward recomputes
  the normalised tensor and what follows it (membrane potentials, pooling
  indices) from the batch norm's input instead of keeping them.

Forward results and gradients are identical to the plain PyTorch operations;
only the memory held between forward and backward shrinks: to 39 % for the
CIFAR SDT in fp32 (44 % in bf16). They apply on accelerators by default; ``memory_mode`` chooses
(the config key ``backward_memory``), and ``keep_full_tensors()`` is the plain
reference of benchmarks and tests.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "MEMORY_MODES", "SpikeConv2d", "SpikeMaxPool2d", "keep_full_tensors", "memory_mode", "norm_then", "resolve_memory_mode",
    "saved_tensor_bytes", "spike_conv2d", "spike_max_pool2d", "spike_mul",
]  # fmt: skip

MEMORY_MODES = ("auto", "lean", "full")
_memory_mode = "auto"


@contextlib.contextmanager
def memory_mode(mode: str):
    """Within this block: ``"lean"`` uses the operations here, ``"full"`` the plain
    PyTorch ones, ``"auto"`` (the default) lean on accelerators, where memory
    bounds the batch, and full on CPU, where the extra conversions and the
    recomputation cost more time than the memory is worth."""
    global _memory_mode
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r}; valid modes are: {', '.join(MEMORY_MODES)}")
    previous, _memory_mode = _memory_mode, mode
    try:
        yield
    finally:
        _memory_mode = previous


def resolve_memory_mode(mode: str, device_type: str) -> str:
    """``"lean"`` or ``"full"``: what ``mode`` means for tensors on ``device_type``."""
    if mode == "auto":
        return "full" if device_type == "cpu" else "lean"
    return mode


def keep_full_tensors():
    """The plain PyTorch operations within this block (the reference)."""
    return memory_mode("full")


def saved_tensor_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``fn()`` runs
    (activations, and parameters that backward needs): the memory a training step
    holds between forward and backward, measured the same way on every device."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def _tracked(*tensors: torch.Tensor) -> bool:
    """Whether the lean version applies: autograd records the call and the memory mode asks for it."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors):
        return False
    return resolve_memory_mode(_memory_mode, tensors[0].device.type) == "lean"


def _unpack(packed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return packed.to(dtype)  # keeps the memory format (channels_last stays channels_last)


# ------------------------------------------------------------- convolution


class _SpikeConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x.to(torch.bool), weight)
        # under autocast the convolution ran in out.dtype; backward repeats that
        ctx.conf = (stride, padding, dilation, groups)
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
            _unpack(packed, compute),
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
        return grad_x, grad_w, grad_b, None, None, None, None


def spike_conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """``F.conv2d`` for a binary input ``x``, keeping ``x`` as bool for backward."""
    if not _tracked(x, weight, bias) or not x.is_floating_point():
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    pair = nn.modules.utils._pair
    return _SpikeConv2d.apply(x, weight, bias, pair(stride), pair(padding), pair(dilation), groups)


class SpikeConv2d(nn.Conv2d):
    """A ``Conv2d`` whose input is always spikes (same parameters and state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return spike_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


# ---------------------------------------------------------------- max-pool


class _SpikeMaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        ctx.conf = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.dtype = x.dtype
        ctx.save_for_backward(x.to(torch.bool))
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        x = _unpack(packed, ctx.dtype)
        # the indices are recomputed from the input instead of kept (int64, 8 bytes each)
        _, indices = F.max_pool2d(x, *ctx.conf, return_indices=True)
        grad = torch.ops.aten.max_pool2d_with_indices_backward(grad_out, x, *map(_as_list, ctx.conf[:4]), ctx.conf[4], indices)
        return grad, None, None, None, None, None


def _as_list(value):
    return list(nn.modules.utils._pair(value))


def spike_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """``F.max_pool2d`` for a binary input, keeping the input as bool and no indices."""
    stride = kernel_size if stride is None else stride
    if not _tracked(x) or not x.is_floating_point():
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return _SpikeMaxPool2d.apply(x, kernel_size, stride, padding, dilation, ceil_mode)


class SpikeMaxPool2d(nn.MaxPool2d):
    """A ``MaxPool2d`` whose input is always spikes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices:
            return super().forward(x)
        return spike_max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


# ----------------------------------------------------------------- product


class _SpikeMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.dtypes = (a.dtype, b.dtype)
        ctx.save_for_backward(a.to(torch.bool), b.to(torch.bool))
        return a * b

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        packed_a, packed_b = ctx.saved_tensors
        dtype_a, dtype_b = ctx.dtypes
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (grad * _unpack(packed_b, dtype_b)).sum_to_size(packed_a.shape).to(dtype_a)
        if ctx.needs_input_grad[1]:
            grad_b = (grad * _unpack(packed_a, dtype_a)).sum_to_size(packed_b.shape).to(dtype_b)
        return grad_a, grad_b


def spike_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` (broadcasting) for binary ``a`` and ``b``, keeping both as bool."""
    if not _tracked(a, b) or not (a.is_floating_point() and b.is_floating_point()):
        return a * b
    return _SpikeMul.apply(a, b)


# ------------------------------------- batch norm, then neuron or max-pool


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class _NormThen(torch.autograd.Function):
    """``fn(norm(x))`` keeping only ``x`` for backward.

    Without it, backward holds the batch norm's input and what ``fn`` keeps
    (a neuron's potentials, a max-pool's input and indices), at least two
    tensors of x's size. Backward recomputes them from ``x`` (cheap
    element-wise work) with the same calls as forward, so values and gradients
    are identical.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, norm, fn):
        y = norm(x.flatten(0, 1)).reshape(x.shape)  # the module call: running statistics move once
        ctx.save_for_backward(x, weight, bias)
        ctx.norm, ctx.fn, ctx.autocast = norm, fn, _autocast_state(x.device.type)
        return fn(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        norm = ctx.norm
        device_type, enabled, dtype = ctx.autocast
        leaves = [
            None if t is None else t.detach().requires_grad_(bool(need))
            for t, need in zip(saved, ctx.needs_input_grad[:3])
        ]
        x, weight, bias = leaves

        def copy(stat):  # the same kernel as forward, without moving the module's statistics again
            return None if stat is None else stat.clone()

        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            y = F.batch_norm(x.flatten(0, 1), copy(norm.running_mean), copy(norm.running_var), weight, bias,
                             True, 0.0, norm.eps)
            out = ctx.fn(y.reshape(x.shape))
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out))
        return (*(next(grads) if t is not None and t.requires_grad else None for t in leaves), None, None)


def norm_then(x: torch.Tensor, norm: nn.BatchNorm2d, fn) -> torch.Tensor:
    """``fn(norm(x))`` for ``x`` ``[T, B, C, H, W]`` with the batch norm over ``[T*B, C, H, W]``.

    ``fn`` maps the normalised ``[T, B, C, H, W]`` to one tensor (a neuron's
    spikes, a max-pool). In training with autograd, backward recomputes the
    batch norm and ``fn`` instead of keeping their outputs (see ``_NormThen``);
    under ``torch.compile`` the compiler makes that choice itself, so the plain
    composition is traced.
    """
    if not norm.training or not _tracked(x, norm.weight, norm.bias) or torch.compiler.is_compiling():
        return fn(norm(x.flatten(0, 1)).reshape(x.shape))
    return _NormThen.apply(x, norm.weight, norm.bias, norm, fn)
