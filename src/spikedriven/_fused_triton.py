"""Triton kernels of the fused multi-step neuron; ``spikedriven.fused`` is the public side.

One program owns ``BLOCK`` neurons and walks over all T steps, so the membrane
potential never leaves registers. The forward kernel writes the spikes and,
when a backward pass will follow, ``U = H - u_th`` (everything the backward
needs); the backward kernel walks t = T-1 .. 0.

Bit-exactness with the per-step PyTorch reference in fp32 needs the same
rounding at every operation, hence:
* ``enable_fp_fusion=False``: no multiply-add contraction into FMAs;
* torch's CUDA kernels divide a tensor by a Python scalar through its fp32
  reciprocal while its CPU kernels divide exactly (``CUDA_ARITH`` picks which);
* on the GPU, libdevice's ``expf`` and IEEE division in the sigmoid, as in
  torch's sigmoid kernel (Triton's default ``exp`` and ``/`` are approximate).
  The Triton interpreter has no libdevice, so it runs ``tl.exp`` instead.

Tensors are handled as flat ``[T, N]`` memory: inputs whose time axis is the
outermost dense dimension (contiguous, or channels_last folded into
``[T, B, C, H, W]``) are used as they are, and outputs get the same strides.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

# Triton reads this switch when it defines the kernels below, so it holds for the whole process.
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MODES = {"lif": 0, "if": 1, "if_soft": 2}
SURROGATES = {"sigmoid": 0, "atan": 1}

_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _forward_kernel(
    x_ptr, s_ptr, u_ptr, T, N,
    v_threshold, v_reset, tau, inv_tau, neg_tiny,
    MODE: tl.constexpr, LIF_OFFSET: tl.constexpr, KEEP_U: tl.constexpr,
    CUDA_ARITH: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    zero = tl.zeros([BLOCK], tl.float32)
    tau_b = zero + tau
    # soft reset starts from 0, hard reset from V_reset (the caller passes 0 for if_soft)
    v = zero + v_reset
    for _ in range(T):
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if MODE == 0:
            if LIF_OFFSET:
                d = x - (v - v_reset)
            else:
                d = x - v
            if CUDA_ARITH:
                h = v + d * inv_tau
            else:
                h = v + tl.math.div_rn(d, tau_b)
        else:
            h = v + x
        u = h - v_threshold
        spike = u >= 0.0
        s = spike.to(tl.float32)
        tl.store(s_ptr + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
        if KEEP_U:
            # keep U < 0 where no spike fired, so that rounding to a half
            # dtype cannot turn it into a spike in the backward pass
            u_keep = tl.where(spike, u, tl.minimum(u, neg_tiny))
            tl.store(u_ptr + offs, u_keep.to(u_ptr.dtype.element_ty), mask=mask)
        if MODE == 2:
            v = h - s * v_threshold
        else:
            v = (1.0 - s) * h + s * v_reset
        x_ptr += N
        s_ptr += N
        u_ptr += N


@triton.jit
def _backward_kernel(
    g_ptr, u_ptr, gx_ptr, T, N, last,
    v_threshold, v_reset, tau, inv_tau, alpha, atan_scale, half_alpha,
    MODE: tl.constexpr, SURROGATE: tl.constexpr, DETACH_RESET: tl.constexpr,
    CUDA_ARITH: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    zero = tl.zeros([BLOCK], tl.float32)
    one = zero + 1.0
    tau_b = zero + tau
    g_ptr += last
    u_ptr += last
    gx_ptr += last
    gv = zero  # dL/dV[t]; V[T-1] feeds nothing
    for _ in range(T):
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = (u >= 0.0).to(tl.float32)
        if not DETACH_RESET:  # the reset also depends on S
            if MODE == 2:
                g = g - gv * v_threshold
            else:
                g = g + gv * (v_reset - (u + v_threshold))
        if SURROGATE == 0:
            z = u * alpha
            if CUDA_ARITH:
                e = libdevice.exp(-z)
            else:
                e = tl.exp(-z)
            sg = tl.math.div_rn(one, one + e)
            gh = g * (1.0 - sg) * sg * alpha
        else:
            z = u * atan_scale
            gh = tl.math.div_rn(g * half_alpha, one + z * z)
        if MODE == 2:
            gh = gh + gv
        else:
            gh = gh + gv * (1.0 - s)
        if MODE == 0:
            if CUDA_ARITH:
                gx = gh * inv_tau
            else:
                gx = tl.math.div_rn(gh, tau_b)
            gv = gh - gx
        else:
            gx = gh
            gv = gh
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        g_ptr -= N
        u_ptr -= N
        gx_ptr -= N


def time_major_dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if its elements fill memory without gaps or overlaps with
    the time axis outermost (so each step is one block, laid out alike), else
    a contiguous copy."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(x.shape[1:], x.stride()[1:]) if sz != 1):
        if stride != expected:
            return x.contiguous()
        expected *= size
    if x.shape[0] > 1 and x.stride(0) != expected:
        return x.contiguous()
    return x


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, _BLOCK),)


def _cuda_arith(x: torch.Tensor) -> bool:
    return x.is_cuda and not INTERPRETING


def forward(
    x: torch.Tensor, mode: str, v_threshold: float, v_reset: float, tau: float, keep_u: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and (if ``keep_u``, else an empty tensor) ``U = H - u_th``, both in ``x``'s dtype."""
    x = time_major_dense(x)
    spikes = torch.empty_like(x)
    u = torch.empty_like(x) if keep_u else x.new_empty(0)
    steps = x.shape[0]
    n = x.numel() // steps if steps else 0
    if n:
        _forward_kernel[_grid(n)](
            x, spikes, u if keep_u else spikes, steps, n,
            v_threshold, v_reset, tau, 1.0 / tau, -torch.finfo(x.dtype).tiny,
            MODE=MODES[mode], LIF_OFFSET=v_reset != 0.0, KEEP_U=keep_u,
            CUDA_ARITH=_cuda_arith(x), BLOCK=_BLOCK,
            num_warps=_NUM_WARPS, enable_fp_fusion=False,
        )  # fmt: skip
    return spikes, u


def backward(
    grad: torch.Tensor,
    u: torch.Tensor,
    mode: str,
    v_threshold: float,
    v_reset: float,
    tau: float,
    surrogate: str,
    alpha: float,
    detach_reset: bool,
) -> torch.Tensor:
    """dL/dX from dL/dS and the saved ``U``; laid out like ``U``."""
    if grad.stride() != u.stride():
        grad = torch.empty_like(u).copy_(grad)
    grad_x = torch.empty_like(u)
    steps = u.shape[0]
    n = u.numel() // steps if steps else 0
    if n:
        _backward_kernel[_grid(n)](
            grad, u, grad_x, steps, n, (steps - 1) * n,
            v_threshold, v_reset, tau, 1.0 / tau, alpha, math.pi / 2 * alpha, alpha / 2,
            MODE=MODES[mode], SURROGATE=SURROGATES[surrogate], DETACH_RESET=detach_reset,
            CUDA_ARITH=_cuda_arith(u), BLOCK=_BLOCK,
            num_warps=_NUM_WARPS, enable_fp_fusion=False,
        )  # fmt: skip
    return grad_x


# The same launches as custom ops, for torch.compile: it keeps them as opaque
# calls and traces shapes and strides through the fake implementations.


@torch.library.custom_op("spikedriven::fused_neuron_forward", mutates_args=())
def forward_op(
    x: torch.Tensor, mode: str, v_threshold: float, v_reset: float, tau: float, keep_u: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return forward(x, mode, v_threshold, v_reset, tau, keep_u)


@forward_op.register_fake
def _(x, mode, v_threshold, v_reset, tau, keep_u):
    x = time_major_dense(x)
    return torch.empty_like(x), torch.empty_like(x) if keep_u else x.new_empty(0)


@torch.library.custom_op("spikedriven::fused_neuron_backward", mutates_args=())
def backward_op(
    grad: torch.Tensor,
    u: torch.Tensor,
    mode: str,
    v_threshold: float,
    v_reset: float,
    tau: float,
    surrogate: str,
    alpha: float,
    detach_reset: bool,
) -> torch.Tensor:
    return backward(grad, u, mode, v_threshold, v_reset, tau, surrogate, alpha, detach_reset)


@backward_op.register_fake
def _(grad, u, mode, v_threshold, v_reset, tau, surrogate, alpha, detach_reset):
    return torch.empty_like(u)
