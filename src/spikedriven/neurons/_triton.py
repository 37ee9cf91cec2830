"""Triton kernels of the fused neuron; ``spikedriven.neurons.fused`` is the public side.

The kernels know no neuron names, only the numbers of a ``FusedForm``: the leak
(none, a division by tau, or a factor k), V_reset, the reset kind and u_th,
each of k and u_th a constant or a learnable scalar read from memory. One
program owns ``BLOCK`` neurons and walks over all T steps, so the membrane
potential never leaves registers. The forward kernel writes the spikes and,
when a backward pass follows, ``U = H - u_th`` (and for a learnable leak the
leak's input ``D = X - (V - V_reset)``). The backward kernel walks
t = T-1 .. 0; the surrogate gradient comes in already evaluated (by the
surrogate's one definition, in PyTorch), so the kernels hold no surrogate.
Gradients of learnable k and u_th are summed per program and then over programs.

Bit-exactness with the per-step PyTorch reference in fp32 needs the same
rounding at every operation, hence ``enable_fp_fusion=False`` (no
multiply-add contraction into FMAs), and: torch's CUDA kernels divide a tensor
by a Python scalar through its fp32 reciprocal while its CPU kernels divide
exactly (``CUDA_ARITH`` picks which).

Tensors are handled as flat ``[T, N]`` memory: inputs whose time axis is the
outermost dense dimension (contiguous, or channels_last folded into
``[T, B, C, H, W]``) are used as they are, and outputs get the same strides.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

# Triton reads this switch when it defines the kernels below, so it holds for the whole process.
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LEAKS = {"none": 0, "divide": 1, "multiply": 2}

_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _setting(ptr, value, LEARNABLE: tl.constexpr):
    """A setting of the neuron (u_th, k): a learnable scalar read from memory, or the constant passed."""
    if LEARNABLE:
        value = tl.load(ptr).to(tl.float32)
    return value


@triton.jit
def _forward_kernel(
    x_ptr, s_ptr, u_ptr, d_ptr, th_ptr, k_ptr, T, N,
    v_threshold, v_reset, tau, inv_tau, k, neg_tiny,
    LEAK: tl.constexpr, OFFSET: tl.constexpr, SOFT: tl.constexpr, LEARN_TH: tl.constexpr, LEARN_K: tl.constexpr,
    KEEP_U: tl.constexpr, KEEP_D: tl.constexpr, CUDA_ARITH: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    zero = tl.zeros([BLOCK], tl.float32)
    tau_b = zero + tau
    th = _setting(th_ptr, v_threshold, LEARN_TH)
    kk = _setting(k_ptr, k, LEARN_K)
    v = zero + v_reset  # the caller passes 0 for a soft reset
    for _ in range(T):
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if LEAK == 0:
            h = v + x
        else:
            if OFFSET:
                d = x - (v - v_reset)
            else:
                d = x - v
            if LEAK == 1:
                if CUDA_ARITH:
                    h = v + d * inv_tau
                else:
                    h = v + tl.math.div_rn(d, tau_b)
            else:
                h = v + d * kk
            if KEEP_D:
                tl.store(d_ptr + offs, d.to(d_ptr.dtype.element_ty), mask=mask)
        u = h - th
        spike = u >= 0.0
        s = spike.to(tl.float32)
        tl.store(s_ptr + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
        if KEEP_U:
            # keep U < 0 where no spike fired, so that rounding to a half
            # dtype cannot turn it into a spike in the backward pass
            u_keep = tl.where(spike, u, tl.minimum(u, neg_tiny))
            tl.store(u_ptr + offs, u_keep.to(u_ptr.dtype.element_ty), mask=mask)
        if SOFT:
            v = h - s * th
        else:
            v = (1.0 - s) * h + s * v_reset
        x_ptr += N
        s_ptr += N
        u_ptr += N
        d_ptr += N


# Its branches are compile-time constants (tl.constexpr): each compiled kernel takes one path through them, and
# the per-step PyTorch loop is the readable reference it is tested against; hence no complexity limit here.
@triton.jit
def _backward_kernel(  # noqa: C901
    g_ptr, sg_ptr, u_ptr, d_ptr, th_ptr, k_ptr, gx_ptr, gth_ptr, gk_ptr, T, N, last,
    v_threshold, v_reset, tau, inv_tau, k,
    LEAK: tl.constexpr, SOFT: tl.constexpr, DETACH: tl.constexpr, LEARN_TH: tl.constexpr, LEARN_K: tl.constexpr,
    CUDA_ARITH: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    zero = tl.zeros([BLOCK], tl.float32)
    tau_b = zero + tau
    th = _setting(th_ptr, v_threshold, LEARN_TH)
    kk = _setting(k_ptr, k, LEARN_K)
    g_ptr += last
    sg_ptr += last
    u_ptr += last
    d_ptr += last
    gx_ptr += last
    gv = zero  # dL/dV[t]; V[T-1] feeds nothing
    acc_th = zero
    acc_k = zero
    for _ in range(T):
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + offs, mask=mask, other=-1.0).to(tl.float32)
        s = (u >= 0.0).to(tl.float32)
        if DETACH:
            g_surr = g  # the surrogate's term, evaluated before the sweep
        else:  # the reset also depends on S
            if SOFT:
                g = g - gv * th
            else:
                g = g + gv * (v_reset - (u + th))
            g_surr = g * tl.load(sg_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if SOFT:
            gh = g_surr + gv
        else:
            gh = g_surr + gv * (1.0 - s)
        if LEARN_TH:  # dU/du_th = -1; a soft reset's dV/du_th = -S
            if SOFT:
                acc_th = acc_th - g_surr - gv * s
            else:
                acc_th = acc_th - g_surr
        if LEAK == 0:
            gx = gh
            gv = gh
        else:
            if LEAK == 1:
                if CUDA_ARITH:
                    gx = gh * inv_tau
                else:
                    gx = tl.math.div_rn(gh, tau_b)
            else:
                gx = gh * kk
                if LEARN_K:
                    acc_k = acc_k + gh * tl.load(d_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            gv = gh - gx
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        g_ptr -= N
        sg_ptr -= N
        u_ptr -= N
        d_ptr -= N
        gx_ptr -= N
    if LEARN_TH:
        tl.store(gth_ptr + pid, tl.sum(tl.where(mask, acc_th, 0.0), axis=0))
    if LEARN_K:
        tl.store(gk_ptr + pid, tl.sum(tl.where(mask, acc_k, 0.0), axis=0))


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


def _scalar(t: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """A learnable scalar's pointer, or a placeholder the kernel does not read."""
    return t.detach().reshape(1).to(torch.float32) if t is not None else like


def forward(
    x: torch.Tensor, th: Optional[torch.Tensor], k: Optional[torch.Tensor], leak: str, soft: bool,
    v_threshold: float, v_reset: float, tau: float, k_value: float, keep_u: bool, keep_d: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spikes, and (if asked, else empty tensors) ``U = H - u_th`` and the leak's input D, in ``x``'s dtype."""
    x = time_major_dense(x)
    spikes = torch.empty_like(x)
    u = torch.empty_like(x) if keep_u else x.new_empty(0)
    d = torch.empty_like(x) if keep_d else x.new_empty(0)
    steps = x.shape[0]
    n = x.numel() // steps if steps else 0
    if n:
        _forward_kernel[_grid(n)](
            x, spikes, u if keep_u else spikes, d if keep_d else spikes, _scalar(th, spikes), _scalar(k, spikes),
            steps, n, v_threshold, v_reset, tau, 1.0 / tau, k_value, -torch.finfo(x.dtype).tiny,
            LEAK=LEAKS[leak], OFFSET=v_reset != 0.0, SOFT=soft, LEARN_TH=th is not None, LEARN_K=k is not None,
            KEEP_U=keep_u, KEEP_D=keep_d, CUDA_ARITH=_cuda_arith(x), BLOCK=_BLOCK,
            num_warps=_NUM_WARPS, enable_fp_fusion=False,
        )  # fmt: skip
    return spikes, u, d


def backward(
    g: torch.Tensor, sg: torch.Tensor, u: torch.Tensor, d: torch.Tensor, th: Optional[torch.Tensor],
    k: Optional[torch.Tensor], leak: str, soft: bool, detach: bool, v_threshold: float, v_reset: float,
    tau: float, k_value: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/dX laid out like ``U`` (from ``g``: the surrogate's term with a detached reset, else dL/dS and
    the surrogate derivative ``sg``), and the per-program partial sums of dL/du_th and dL/dk (or empty)."""
    if g.stride() != u.stride():
        g = torch.empty_like(u).copy_(g)
    if not detach and sg.stride() != u.stride():
        sg = torch.empty_like(u).copy_(sg)
    grad_x = torch.empty_like(u)
    steps = u.shape[0]
    n = u.numel() // steps if steps else 0
    programs = _grid(n)[0] if n else 0
    part_th = torch.zeros(programs if th is not None else 0, dtype=torch.float32, device=u.device)
    part_k = torch.zeros(programs if k is not None else 0, dtype=torch.float32, device=u.device)
    if n:
        _backward_kernel[(programs,)](
            g, sg if not detach else g, u, d if k is not None else u, _scalar(th, u), _scalar(k, u), grad_x,
            part_th if th is not None else grad_x, part_k if k is not None else grad_x, steps, n, (steps - 1) * n,
            v_threshold, v_reset, tau, 1.0 / tau, k_value,
            LEAK=LEAKS[leak], SOFT=soft, DETACH=detach, LEARN_TH=th is not None, LEARN_K=k is not None,
            CUDA_ARITH=_cuda_arith(u), BLOCK=_BLOCK, num_warps=_NUM_WARPS, enable_fp_fusion=False,
        )  # fmt: skip
    return grad_x, part_th, part_k


# The same launches as custom ops, for torch.compile: it keeps them as opaque
# calls and traces shapes and strides through the fake implementations.


@torch.library.custom_op("spikedriven::fused_neuron_forward", mutates_args=())
def forward_op(
    x: torch.Tensor, th: Optional[torch.Tensor], k: Optional[torch.Tensor], leak: str, soft: bool,
    v_threshold: float, v_reset: float, tau: float, k_value: float, keep_u: bool, keep_d: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spikes, u, d = forward(x, th, k, leak, soft, v_threshold, v_reset, tau, k_value, keep_u, keep_d)
    return spikes, u, d


@forward_op.register_fake
def _(x, th, k, leak, soft, v_threshold, v_reset, tau, k_value, keep_u, keep_d):
    x = time_major_dense(x)
    empty = x.new_empty(0)
    return torch.empty_like(x), torch.empty_like(x) if keep_u else empty, torch.empty_like(x) if keep_d else x.new_empty(0)


@torch.library.custom_op("spikedriven::fused_neuron_backward", mutates_args=())
def backward_op(
    g: torch.Tensor, sg: torch.Tensor, u: torch.Tensor, d: torch.Tensor, th: Optional[torch.Tensor],
    k: Optional[torch.Tensor], leak: str, soft: bool, detach: bool, v_threshold: float, v_reset: float,
    tau: float, k_value: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return backward(g, sg, u, d, th, k, leak, soft, detach, v_threshold, v_reset, tau, k_value)


@backward_op.register_fake
def _(g, sg, u, d, th, k, leak, soft, detach, v_threshold, v_reset, tau, k_value):
    n = u.numel() // u.shape[0] if u.shape[0] else 0
    programs = triton.cdiv(n, _BLOCK) if n else 0
    return (torch.empty_like(u), u.new_empty(programs if th is not None else 0, dtype=torch.float32),
            u.new_empty(programs if k is not None else 0, dtype=torch.float32))
