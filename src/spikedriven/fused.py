"""Fused multi-step neuron: all T steps of a neuron layer in one pass.

The reference ``SpikingNeuron.forward`` runs T Python steps of several small
kernels each, and autograd keeps every step's intermediate tensors for the
backward pass. Here the forward pass is one sweep over T (one Triton kernel on
the GPU) and it keeps a single tensor for backward: ``U = H - u_th`` in the
input's dtype. Everything the backward needs follows from U: the spike
``S = Θ(U)``, the surrogate derivative at U, and ``H = U + u_th`` (used only
when ``detach_reset=False``). The backward pass is a second sweep, t = T-1 .. 0:

    dL/dH[t]   = dL/dS[t] sg'(U[t]) + dL/dV[t] dV[t]/dH[t]
    dL/dX[t]   = dL/dH[t] dH/dX          (1/tau for LIF, 1 for IF)
    dL/dV[t-1] = dL/dH[t] dH/dV          (1 - 1/tau for LIF, 1 for IF)

with ``dV/dH = 1 - S`` (hard reset) or 1 (soft reset) when the reset is
detached; otherwise the reset's dependence on S adds ``dL/dV (V_reset - H)``
(hard) or ``-dL/dV u_th`` (soft) to dL/dS before the surrogate.

fp16 / bf16 inputs are computed in fp32 and the spikes returned in the input
dtype. For fp32 inputs each operation is rounded as in the reference, so the
spikes equal ``create_neuron(spec)(x)`` exactly, and so do the input gradients
with a detached reset; with ``detach_reset=False`` a few sums are taken in
another order and H is recomputed from U, so those agree to rounding.

Two implementations of that same math: Triton kernels for CUDA tensors (see
``spikedriven._fused_triton``), and the PyTorch loop below for everything else
(CPU, float64, or no Triton), which also serves as their reference.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.autograd.function import once_differentiable

try:
    from . import _fused_triton
except ImportError:  # Triton is optional: without it every tensor takes the PyTorch path
    _fused_triton = None

if TYPE_CHECKING:
    from .neurons import NeuronSpec

__all__ = ["fused_available", "fused_neuron"]

BACKENDS = ("auto", "triton", "torch")


class _Params(NamedTuple):
    mode: str
    v_threshold: float
    v_reset: float  # also the initial potential; 0 for soft reset
    tau: float
    surrogate: str
    alpha: float
    detach_reset: bool


def _params(spec: "NeuronSpec") -> _Params:
    v_reset = spec.resolved_v_reset
    return _Params(
        mode=spec.mode,
        v_threshold=float(spec.v_threshold),
        v_reset=0.0 if v_reset is None else v_reset,
        tau=float(spec.tau),
        surrogate=spec.surrogate,
        alpha=float(spec.surrogate_alpha),
        detach_reset=spec.detach_reset,
    )


def fused_available(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on ``x``: a CUDA tensor (or a CPU
    tensor under ``TRITON_INTERPRET=1``) of dtype fp32, fp16 or bf16."""
    if _fused_triton is None or x.dtype not in _fused_triton.DTYPES:
        return False
    return x.is_cuda or (_fused_triton.INTERPRETING and x.device.type == "cpu")


def fused_neuron(x: torch.Tensor, spec: "NeuronSpec", backend: str = "auto") -> torch.Tensor:
    """Spikes of a neuron layer with settings ``spec`` for input current ``x`` ``[T, ...]``.

    ``backend``: ``"triton"``, ``"torch"``, or ``"auto"`` (Triton where
    ``fused_available(x)``, else PyTorch).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends are: {', '.join(BACKENDS)}")
    if x.dim() == 0:
        raise ValueError("a neuron input needs a leading time axis [T, ...], got a 0-d tensor")
    if not x.is_floating_point():
        raise TypeError(f"a neuron input must be a floating-point tensor, got {x.dtype}")
    use_triton = fused_available(x) if backend == "auto" else backend == "triton"
    if use_triton and not fused_available(x):
        raise RuntimeError(
            f"the Triton neuron kernels cannot run on this tensor ({x.device}, {x.dtype}); "
            "they need Triton and a CUDA tensor of dtype float32, float16 or bfloat16"
        )
    p = _params(spec)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FusedNeuron.apply(x, p, use_triton)
    return _forward(x, p, False, use_triton)[0]


class _FusedNeuron(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: _Params, use_triton: bool) -> torch.Tensor:
        spikes, u = _forward(x, p, True, use_triton)
        ctx.save_for_backward(u)
        ctx.p, ctx.use_triton = p, use_triton
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        return _backward(grad, u, ctx.p, ctx.use_triton), None, None


# torch.compile reaches the Triton kernels through custom ops (opaque calls with
# fake implementations for tracing); eager calls launch them directly, which
# saves the dispatcher's overhead on every call.


def _forward(x: torch.Tensor, p: _Params, keep_u: bool, use_triton: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not use_triton:
        return _forward_torch(x, p, keep_u)
    args = (x, p.mode, p.v_threshold, p.v_reset, p.tau, keep_u)
    if torch.compiler.is_compiling():
        return _fused_triton.forward_op(*args)
    return _fused_triton.forward(*args)


def _backward(grad: torch.Tensor, u: torch.Tensor, p: _Params, use_triton: bool) -> torch.Tensor:
    if not use_triton:
        return _backward_torch(grad, u, p)
    if torch.compiler.is_compiling():
        return _fused_triton.backward_op(grad, u, *p)
    return _fused_triton.backward(grad, u, *p)


# ------------------------------------------------------------ PyTorch path
# Written with the reference's operations in the reference's order, so that
# fp32 results round identically on any device.


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _forward_torch(x: torch.Tensor, p: _Params, keep_u: bool) -> tuple[torch.Tensor, torch.Tensor]:
    compute = _compute_dtype(x.dtype)
    neg_tiny = -torch.finfo(x.dtype).tiny
    v = torch.full(x.shape[1:], p.v_reset, dtype=compute, device=x.device)
    spikes, us = [], []
    for t in range(x.shape[0]):
        xt = x[t].to(compute)
        if p.mode == "lif":
            if p.v_reset == 0.0:
                h = v + (xt - v) / p.tau
            else:
                h = v + (xt - (v - p.v_reset)) / p.tau
        else:
            h = v + xt
        u = h - p.v_threshold
        spike = u >= 0
        s = spike.to(compute)
        spikes.append(s.to(x.dtype))
        if keep_u:
            # keep U < 0 where no spike fired, so that rounding to a half
            # dtype cannot turn it into a spike in the backward pass
            us.append(torch.where(spike, u, u.clamp(max=neg_tiny)).to(x.dtype))
        if p.mode == "if_soft":
            v = h - s * p.v_threshold
        else:
            v = (1.0 - s) * h + s * p.v_reset
    return torch.stack(spikes), torch.stack(us) if keep_u else x.new_empty(0)


def _surrogate_grad(g: torch.Tensor, u: torch.Tensor, p: _Params) -> torch.Tensor:
    if p.surrogate == "sigmoid":
        sg = torch.sigmoid(u * p.alpha)
        return g * (1.0 - sg) * sg * p.alpha
    z = (math.pi / 2 * p.alpha) * u
    return g * (p.alpha / 2) / (1.0 + z * z)


def _backward_torch(grad: torch.Tensor, u_all: torch.Tensor, p: _Params) -> torch.Tensor:
    compute = _compute_dtype(u_all.dtype)
    soft = p.mode == "if_soft"
    gv = torch.zeros(u_all.shape[1:], dtype=compute, device=u_all.device)
    grads = []
    for t in reversed(range(u_all.shape[0])):
        g = grad[t].to(compute)
        u = u_all[t].to(compute)
        s = (u >= 0).to(compute)
        if not p.detach_reset:
            g = g - gv * p.v_threshold if soft else g + gv * (p.v_reset - (u + p.v_threshold))
        gh = _surrogate_grad(g, u, p)
        gh = gh + gv if soft else gh + gv * (1.0 - s)
        if p.mode == "lif":
            gx = gh / p.tau
            gv = gh - gx
        else:
            gx = gv = gh
        grads.append(gx.to(u_all.dtype))
    grads.reverse()
    return torch.stack(grads)
