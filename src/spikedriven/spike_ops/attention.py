"""Attention of spikes without softmax: matrix products of spike matrices, kept as bool for backward.

``(q kᵀ) s v`` or ``q (kᵀ v) s`` with spikes q, k, v ``[..., N, d]`` and a scale s (Spikformer's two
orders, the second also SDT-V2's), or ``((q kᵀ) v) s`` (SDT-V3's). Autograd would keep q, k and v as floats and the N x N (or d x d) product, which is neither
spikes nor small; here only q, k and v are kept, in one byte each, and backward recomputes the
products with the same calls as forward, so values and gradients are identical to the plain ones.
"""

from __future__ import annotations

import torch
from timm.layers import register_notrace_function
from torch.autograd.function import once_differentiable

from . import expansion
from .layers import _pack, _tracked, _unpack

ATTENTION_ORDERS = ("qk_v", "q_kv", "qk_v_scaled")  # (q kᵀ) s, then v; q (kᵀ v), then s; (q kᵀ) v, then s


def attention_products(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, order: str) -> torch.Tensor:
    """The plain products in ``order``: ``((q @ kᵀ) * scale) @ v``, ``(q @ (kᵀ @ v)) * scale`` or
    ``((q @ kᵀ) @ v) * scale`` (the scale's place changes the rounding)."""
    if order == "qk_v":
        return ((q @ k.transpose(-2, -1)) * scale) @ v
    if order == "q_kv":
        return (q @ (k.transpose(-2, -1) @ v)) * scale
    if order == "qk_v_scaled":
        return ((q @ k.transpose(-2, -1)) @ v) * scale
    raise ValueError(f"unknown attention order {order!r}; valid orders are: {', '.join(ATTENTION_ORDERS)}")


class _SpikeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, order, levels):
        ctx.save_for_backward(_pack(q, levels), _pack(k, levels), _pack(v, levels))
        ctx.scale, ctx.order, ctx.levels, ctx.dtypes = scale, order, levels, (q.dtype, k.dtype, v.dtype)
        device_type = q.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        return attention_products(q, k, v, scale, order)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        device_type, enabled, dtype = ctx.autocast
        leaves = [_unpack(packed, kept_dtype, ctx.levels).requires_grad_(bool(need))
                  for packed, kept_dtype, need in zip(ctx.saved_tensors, ctx.dtypes, ctx.needs_input_grad[:3])]
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            out = attention_products(*leaves, ctx.scale, ctx.order)
        wanted = [t for t in leaves if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad))
        return (*[next(grads) if t.requires_grad else None for t in leaves], None, None, None)


@register_notrace_function  # branches on its inputs' requires_grad and dtype: torch.fx records the call
def spike_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, order: str = "qk_v",
                    levels: int = 1, memory: str = "auto") -> torch.Tensor:
    """``attention_products`` for spikes q, k, v of ``levels`` levels (``memory``: the calling layer's
    memory mode), keeping the three in one byte each for backward."""
    if order not in ATTENTION_ORDERS:
        raise ValueError(f"unknown attention order {order!r}; valid orders are: {', '.join(ATTENTION_ORDERS)}")
    if levels > 1 and expansion.watching():  # an operation count prices these products in its expanded view
        expansion.note_attention(q, k, v, order, levels)
    if levels > 1 and expansion.expanding():
        return expansion.expanded_attention(q, k, v, scale, order, levels)
    tensors = (q, k, v)
    # under torch.compile the compiler chooses what backward keeps, as for norm_then
    if (not _tracked(memory, *tensors) or not all(t.is_floating_point() for t in tensors)
            or torch.compiler.is_compiling()):
        return attention_products(q, k, v, scale, order)
    return _SpikeAttention.apply(q, k, v, scale, order, levels)
