"""The fused neuron: all T steps of a neuron layer in one pass, from its ``FusedForm``.

The per-step loop runs T Python steps of several small kernels each, and
autograd keeps every step's intermediate tensors for backward. Here forward is
one sweep over T (one Triton kernel on the GPU) and keeps ``U = H - u_th`` in
the input's dtype (plus, for a learnable leak, its input ``D``). Backward
sweeps t = T-1 .. 0, with the surrogate's own definition for ``sg'``:

    dL/dH[t]   = dL/dS[t] sg'(U[t]) + dL/dV[t] dV[t]/dH[t]
    dL/dX[t]   = dL/dH[t] dH/dX          (1/tau or k with a leak, else 1)
    dL/dV[t-1] = dL/dH[t] dH/dV          (1 - 1/tau or 1 - k, else 1)
    dL/dk      = sum dL/dH[t] D[t];   dL/du_th = -sum dL/dS[t] sg'(U[t]) (- sum dL/dV[t] S[t], soft reset)

with ``dV/dH = 1 - S`` (hard reset) or 1 (soft reset) when the reset is
detached; otherwise the reset's dependence on S adds ``dL/dV (V_reset - H)``
(hard) or ``-dL/dV u_th`` (soft) to dL/dS before the surrogate.

fp16 / bf16 inputs are computed in fp32 and the spikes returned in the input
dtype. For fp32 inputs each forward operation is rounded as in the loop, so
the spikes equal the loop's exactly; gradients agree to rounding (a few sums
are taken in another order, and with ``detach_reset=False`` H is recomputed
from U). The PyTorch path evaluates the surrogate step by step, the Triton
path for all steps before its sweep.

Two implementations of that same math: Triton kernels for CUDA tensors
(``_triton``), and the PyTorch loop below for everything else (CPU, float64,
or no Triton), which is also their reference.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from .spec import FusedForm
from .surrogates import Surrogate

try:
    from . import _triton
except ImportError:  # Triton is optional: without it every tensor takes the PyTorch path
    _triton = None

__all__ = ["fused_available", "fused_multi_step", "fused_neuron"]

BACKENDS = ("auto", "triton", "torch")


class _Params(NamedTuple):
    leak: str
    soft: bool
    v_threshold: float  # when u_th is not learnable
    v_reset: float  # also the initial potential; 0 for soft reset
    tau: float
    k: float  # when k is not learnable
    surrogate: type
    alpha: float
    detach_reset: bool


def fused_available(x: torch.Tensor) -> bool:
    """Whether the Triton kernels can run on ``x``: a CUDA tensor (or a CPU
    tensor under ``TRITON_INTERPRET=1``) of dtype fp32, fp16 or bf16."""
    if _triton is None or x.dtype not in _triton.DTYPES:
        return False
    return x.is_cuda or (_triton.INTERPRETING and x.device.type == "cpu")


def _learnable(value) -> Optional[torch.Tensor]:
    return value if isinstance(value, torch.Tensor) else None


def fused_multi_step(
    x: torch.Tensor, form: FusedForm, surrogate: type[Surrogate], alpha: float, detach_reset: bool, backend: str = "auto"
) -> torch.Tensor:
    """Spikes of a neuron layer given as ``form`` for input current ``x`` ``[T, ...]``.

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
    th, k = _learnable(form.v_threshold), _learnable(form.k)
    p = _Params(
        leak=form.leak, soft=form.soft_reset, v_threshold=0.0 if th is not None else float(form.v_threshold),
        v_reset=0.0 if form.soft_reset else float(form.v_reset), tau=float(form.tau),
        k=1.0 if k is not None else float(form.k), surrogate=surrogate, alpha=float(alpha), detach_reset=detach_reset,
    )
    tensors = [t for t in (x, th, k) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _FusedNeuron.apply(x, th, k, p, use_triton)
    return _forward(x, th, k, p, False, False, use_triton)[0]


def fused_neuron(x: torch.Tensor, spec, backend: str = "auto") -> torch.Tensor:
    """``fused_multi_step`` for the neuron that ``spec`` (a NeuronSpec, mapping or name) builds."""
    from .registry import create_neuron

    neuron = create_neuron(spec)
    form = neuron.fused_form()
    if form is None:
        raise ValueError(f"neuron {neuron.name!r} has no fused form")
    return fused_multi_step(x, form, backend=backend, **neuron.fused_gradient())


class _FusedNeuron(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, th, k, p: _Params, use_triton: bool):
        spikes, u, d = _forward(x, th, k, p, True, k is not None, use_triton)
        ctx.save_for_backward(u, d, th, k)
        ctx.p, ctx.use_triton = p, use_triton
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        u, d, th, k = ctx.saved_tensors
        grad_x, grad_th, grad_k = _backward(grad, u, d, th, k, ctx.p, ctx.use_triton)
        if grad_th is not None:
            grad_th = grad_th.reshape(th.shape).to(th.dtype)
        if grad_k is not None:
            grad_k = grad_k.reshape(k.shape).to(k.dtype)
        return grad_x, grad_th, grad_k, None, None


# torch.compile reaches the Triton kernels through custom ops (opaque calls with
# fake implementations for tracing); eager calls launch them directly, which
# saves the dispatcher's overhead on every call.


def _forward(x, th, k, p: _Params, keep_u: bool, keep_d: bool, use_triton: bool):
    if not use_triton:
        return _forward_torch(x, th, k, p, keep_u, keep_d)
    args = (x, th, k, p.leak, p.soft, p.v_threshold, p.v_reset, p.tau, p.k, keep_u, keep_d)
    return (_triton.forward_op if torch.compiler.is_compiling() else _triton.forward)(*args)


def _backward(grad, u, d, th, k, p: _Params, use_triton: bool):
    if not use_triton:
        return _backward_torch(grad, u, d, th, k, p)
    # the surrogate, by its one definition, at every step at once: the kernel then holds none
    u_c = u.to(_compute_dtype(u.dtype))
    if p.detach_reset:
        g, sg = p.surrogate.grad(grad.to(u_c.dtype), u_c, p.alpha), None
    else:  # dL/dS gains the reset's term in the sweep; the kernel multiplies by the derivative itself
        g, sg = grad, p.surrogate.grad(torch.ones_like(u_c), u_c, p.alpha)
    args = (g, sg if sg is not None else g, u, d, th, k, p.leak, p.soft, p.detach_reset, p.v_threshold, p.v_reset,
            p.tau, p.k)
    grad_x, part_th, part_k = (_triton.backward_op if torch.compiler.is_compiling() else _triton.backward)(*args)
    # the programs' partial sums, added in float64
    return (grad_x, part_th.double().sum() if th is not None else None, part_k.double().sum() if k is not None else None)


# ------------------------------------------------------------ PyTorch path
# Written with the loop's operations in the loop's order, so that fp32 results
# round identically on any device.


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _charge(v, xt, p: _Params, kk):
    """H and the leak's input D (None without a leak)."""
    if p.leak == "none":
        return v + xt, None
    d = xt - v if p.v_reset == 0.0 else xt - (v - p.v_reset)
    return (v + d / p.tau if p.leak == "divide" else v + d * kk), d


def _forward_torch(x, th, k, p: _Params, keep_u: bool, keep_d: bool):
    compute = _compute_dtype(x.dtype)
    neg_tiny = -torch.finfo(x.dtype).tiny
    thr = th.detach().to(compute) if th is not None else p.v_threshold
    kk = k.detach().to(compute) if k is not None else p.k
    v = torch.full(x.shape[1:], p.v_reset, dtype=compute, device=x.device)
    spikes, us, ds = [], [], []
    for t in range(x.shape[0]):
        h, d = _charge(v, x[t].to(compute), p, kk)
        u = h - thr
        spike = u >= 0
        s = spike.to(compute)
        spikes.append(s.to(x.dtype))
        if keep_u:
            # keep U < 0 where no spike fired, so that rounding to a half
            # dtype cannot turn it into a spike in the backward pass
            us.append(torch.where(spike, u, u.clamp(max=neg_tiny)).to(x.dtype))
        if keep_d:
            ds.append(d.to(x.dtype))
        v = h - s * thr if p.soft else (1.0 - s) * h + s * p.v_reset
    empty = x.new_empty(0)
    return torch.stack(spikes), torch.stack(us) if keep_u else empty, torch.stack(ds) if keep_d else empty


def _backward_torch(grad, u_all, d_all, th, k, p: _Params):
    compute = _compute_dtype(u_all.dtype)
    thr = th.detach().to(compute) if th is not None else p.v_threshold
    kk = k.detach().to(compute) if k is not None else p.k
    gv = torch.zeros(u_all.shape[1:], dtype=compute, device=u_all.device)
    grad_th = torch.zeros((), dtype=torch.float64, device=u_all.device) if th is not None else None
    grad_k = torch.zeros((), dtype=torch.float64, device=u_all.device) if k is not None else None
    grads = []
    for t in reversed(range(u_all.shape[0])):
        u = u_all[t].to(compute)
        s = (u >= 0).to(compute)
        g = grad[t].to(compute)
        if not p.detach_reset:  # the reset also depends on S
            g = g - gv * thr if p.soft else g + gv * (p.v_reset - (u + thr))
        # step by step, as the loop's autograd calls it: CPU kernels round a tensor's tail apart from its body
        g_surr = p.surrogate.grad(g, u, p.alpha)
        gh = g_surr + gv if p.soft else g_surr + gv * (1.0 - s)
        if grad_th is not None:  # dU/du_th = -1; a soft reset's dV/du_th = -S
            grad_th = grad_th - g_surr.sum(dtype=torch.float64) - ((gv * s).sum(dtype=torch.float64) if p.soft else 0.0)
        if p.leak == "none":
            gx = gv = gh
        else:
            gx = gh / p.tau if p.leak == "divide" else gh * kk
            if grad_k is not None:
                grad_k = grad_k + (gh * d_all[t].to(compute)).sum(dtype=torch.float64)
            gv = gh - gx
        grads.append(gx.to(u_all.dtype))
    grads.reverse()
    return torch.stack(grads), grad_th, grad_k
