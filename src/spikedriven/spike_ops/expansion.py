"""Multi-level spikes run as binary ones: the expanded forward, and the products it counts.

A multi-level spike k / D (k = 0 .. D, ``multispike``) is k binary spikes over D virtual sub-steps
(SDT-V3's claim for inference): sub-step j carries the binary frame ``b_j = [k >= j]``, and
``sum_j b_j = k``. A layer is linear, so

    layer(k / D) = (sum_j layer_without_bias(b_j)) / D + bias

(the 1/D folded into the weights at no cost, the bias added once per step). Under
``binary_expansion(model)`` every layer fed by multi-level spikes computes its output that way, from
binary inputs only, and so do the products of such spikes: ``spike_mul`` as
``sum_ij b_i(a) AND b_j(b) / D^2``, ``spike_attention`` its product of two spike matrices as D^2 binary
products and its product of that integer-valued result with the third spike matrix as D binary ones.
The logits are the integer forward's to float rounding: sums of 0/1 frames are exact, and for D a power
of two so are the products (a layer's sum over its D frames rounds differently from its one pass, by an
ulp, which a neuron's rounding could only turn into another level at an exact tie).

Max-pools need no expansion: the maximum commutes with the threshold (``[max k >= j] = max [k >= j]``),
so the frames of a pooled input are the pooled frames. A layer that reads sums of spikes
(``spike_count_input``: a count k may exceed D) gets its count spread over the D sub-steps,
``floor((k + D - j) / D)`` events at sub-step j, which for k <= D is ``b_j``.

``watch_products(model)`` is the counting side: while the model runs, ``spike_mul`` and
``spike_attention`` report how many products of multi-level spikes they computed, which the operation
counter's expanded view prices as binary operations (``analysis.operations.expanded_counts``).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn

__all__ = ["ProductTally", "binary_expansion", "binary_frame", "spike_counts", "watch_products"]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the layers the operation counter counts


def spike_counts(x: torch.Tensor, levels: int, bounded: bool = True) -> Optional[torch.Tensor]:
    """The event counts k (float64) of spikes ``x = k / levels``, or None where ``x`` holds anything else: a
    value off that grid, a negative one, or (``bounded``) one above 1. The operation counter's rule for
    what a spike-fed layer is, so the expanded forward and the expanded counts agree layer by layer."""
    events = x.detach().double() * levels
    counts = events.round()
    fits = ((events - counts).abs() < 1e-4 * levels).all() & (counts >= 0).all()
    if bounded:
        fits &= (counts <= levels).all()
    return counts if bool(fits) else None


def binary_frame(counts: torch.Tensor, j: int, levels: int) -> torch.Tensor:
    """The events of sub-step ``j`` (1 .. levels) of counts k: ``floor((k + levels - j) / levels)``, the
    binary ``[k >= j]`` for k <= levels."""
    return torch.div(counts + (levels - j), levels, rounding_mode="floor")


def _frames(x: torch.Tensor, levels: int, what: str) -> list[torch.Tensor]:
    """The ``levels`` binary frames of spikes ``x`` in ``x``'s dtype; ``what`` names the caller in the error."""
    counts = spike_counts(x, levels)
    if counts is None:
        raise ValueError(f"{what} of {levels} levels got values that are not spikes k / {levels}, so they "
                         "have no binary expansion")
    return [binary_frame(counts, j, levels).to(x.dtype) for j in range(1, levels + 1)]


# ------------------------------------------------------------------ what is switched on, and for which model


class _Active:
    expanding = 0  # binary_expansion forwards under way
    tallies: list["ProductTally"] = []  # watch_products tallies of the forwards under way


@contextlib.contextmanager
def _during_forwards(model: nn.Module, start: Callable[[], None], end: Callable[[], None]) -> Iterator[None]:
    """``start()`` as each forward of ``model`` inside the block begins and ``end()`` as it ends, raised or
    not: the functions ``spike_mul`` and ``spike_attention`` know no model, and another model run meanwhile
    must not be touched."""
    running = 0

    def begin(module, args):
        nonlocal running
        start()
        running += 1

    def finish(module, args, output):
        nonlocal running
        if running:  # not when start() itself raised
            running -= 1
            end()

    handles = [model.register_forward_pre_hook(begin), model.register_forward_hook(finish, always_call=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def expanding() -> bool:
    """True while a model runs under ``binary_expansion``."""
    return _Active.expanding > 0


# ------------------------------------------------------------------ the expanded forward


@contextlib.contextmanager
def binary_expansion(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model`` runs its multi-level spikes as binary ones (see the module's docstring):
    every Conv1d / Conv2d / Linear whose input is spikes of D > 1 levels (D: its ``levels``, else the model's
    ``spike_levels``; the input checked at each call, by the operation counter's rule) computes
    ``(sum_j layer_without_bias(b_j)) / D + bias`` from the binary frames ``b_j`` of its input, and
    ``spike_mul`` / ``spike_attention`` of multi-level spikes compute from the frames of their factors. A plain
    layer whose input is not such spikes (the first convolution, on the image) runs as it is; a spike layer
    (``SpikeConv2d``, ...) refuses it. Inference only: a forward with gradients enabled is refused."""
    default = getattr(model, "spike_levels", 1)
    layers = [(name, m, getattr(m, "levels", None) or default) for name, m in model.named_modules()
              if isinstance(m, _LAYERS)]
    layers = [(name, m, levels) for name, m, levels in layers if levels > 1]
    saved = [(m, m.__dict__.get("forward")) for _, m, _ in layers]
    for name, layer, levels in layers:
        # an instance attribute shadows the class's forward, so module calls (and their hooks) run the expansion
        layer.forward = functools.partial(_expanded_forward, layer, name, levels, layer.forward)

    def start():
        if torch.is_grad_enabled():
            raise RuntimeError("binary_expansion runs inference only: call the model under torch.no_grad() "
                               "or torch.inference_mode()")
        _Active.expanding += 1

    def end():
        _Active.expanding -= 1

    try:
        with _during_forwards(model, start, end):
            yield model
    finally:
        for layer, forward in saved:
            del layer.forward
            if forward is not None:
                layer.forward = forward


def _without_bias(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return torch.nn.functional.linear(x, layer.weight)
    return layer._conv_forward(x, layer.weight, None)  # its padding mode included


def _expanded_forward(layer: nn.Module, name: str, levels: int, plain: Callable, x: torch.Tensor) -> torch.Tensor:
    declared = hasattr(layer, "levels")  # a spike layer (SpikeConv2d, ...) takes only spikes
    counts = spike_counts(x, levels, bounded=not getattr(layer, "spike_count_input", False))
    if counts is None:
        if declared:
            raise ValueError(f"layer {name} of {levels} levels got an input that is not spikes k / {levels}, "
                             "so it has no binary expansion")
        return plain(x)  # real values (the first convolution sees the image): nothing to expand
    total = None
    for j in range(1, levels + 1):  # one pass per sub-step, on its binary frame
        out = _without_bias(layer, binary_frame(counts, j, levels).to(x.dtype))
        total = out if total is None else total + out
    y = total / levels
    if layer.bias is None:
        return y
    return y + (layer.bias if isinstance(layer, nn.Linear) else layer.bias.view(-1, *[1] * (y.dim() - 2)))


def expanded_mul(a: torch.Tensor, b: torch.Tensor, levels: int) -> torch.Tensor:
    """``a * b`` for spikes of ``levels`` levels from their frames: each of the D^2 frame pairs an AND
    (a product of 0/1 values)."""
    frames_a, frames_b = _frames(a, levels, "spike_mul"), _frames(b, levels, "spike_mul")
    return sum(fa * fb for fa in frames_a for fb in frames_b) / (levels * levels)


def expanded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, order: str,
                       levels: int) -> torch.Tensor:
    """``attention_products`` from the frames of q, k, v: the product of two spike matrices as D^2 binary
    products (ANDs summed), the product of that integer-valued matrix with the third as D binary ones (a
    binary frame selects which of its entries are added), the scale where ``order`` puts it."""
    fq, fk, fv = (_frames(t, levels, "spike_attention") for t in (q, k, v))
    square = levels * levels
    if order in ("qk_v", "qk_v_scaled"):
        scores = sum(x @ y.transpose(-2, -1) for x in fq for y in fk) / square
        if order == "qk_v":
            scores = scores * scale
        out = sum(scores @ y for y in fv) / levels
        return out if order == "qk_v" else out * scale
    if order == "q_kv":
        kv = sum(x.transpose(-2, -1) @ y for x in fk for y in fv) / square
        return sum(x @ kv for x in fq) / levels * scale
    raise ValueError(f"attention order {order!r} has no binary expansion")


# ------------------------------------------------------------------ counting the products


@dataclass
class ProductTally:
    """Products of multi-level spikes a model computed while watched (dense: every product of the shapes).
    ``spike[(a, b)]``: products of a level-a and a level-b spike (the elements of ``spike_mul``'s output, the
    terms of ``spike_attention``'s product of two spike matrices); ``mixed[d]``: products of an integer-valued
    number with a level-d spike (the terms of ``spike_attention``'s second product)."""

    spike: Counter = field(default_factory=Counter)
    mixed: Counter = field(default_factory=Counter)


@contextlib.contextmanager
def watch_products(model: nn.Module, tally: Optional[ProductTally] = None) -> Iterator[ProductTally]:
    """A ``ProductTally`` (``tally``, or a new one) of the products of multi-level spikes in the forwards of
    ``model`` inside the block."""
    tally = ProductTally() if tally is None else tally
    with _during_forwards(model, lambda: _Active.tallies.append(tally), lambda: _Active.tallies.remove(tally)):
        yield tally


def watching() -> bool:
    """True while a watched model runs (a cheap test that keeps the report out of every other call)."""
    return bool(_Active.tallies)


def note_mul(shape: torch.Size, levels: int) -> None:
    """``spike_mul``: an output of ``shape``, each element a product of two level-``levels`` spikes."""
    for tally in _Active.tallies:
        tally.spike[(levels, levels)] += shape.numel()


def note_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: str, levels: int) -> None:
    """``spike_attention``'s products over heads ``[..., N, d]``: (q kᵀ) v has N_q x N_k x d spike products
    and N_q x N_k x d_v mixed ones; q (kᵀ v) has d x d_v x N_k spike products and N_q x d x d_v mixed ones."""
    groups = q.shape[:-2].numel()
    (n_q, d), n_k, d_v = q.shape[-2:], k.shape[-2], v.shape[-1]
    if order == "q_kv":
        spike, mixed = d * d_v * n_k, n_q * d * d_v
    else:  # qk_v, qk_v_scaled: the scale's place changes no count
        spike, mixed = n_q * n_k * d, n_q * n_k * d_v
    for tally in _Active.tallies:
        tally.spike[(levels, levels)] += groups * spike
        tally.mixed[levels] += groups * mixed
