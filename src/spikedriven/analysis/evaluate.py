"""One pass over an evaluation set: accuracy, firing rates, operations and energy per image.

The counts come from the model itself (``operations``); each energy model asked
for (``energy``) prices them, and the SDT paper's convention (``sdt``) is
always computed too, as the per-layer rows and totals every report shows.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import DataError
from ..engine.loop import evaluate
from ..engine.recorder import SpikeRecorder, learned_settings
from .energy import ENERGY_MODELS, EnergyModel, estimate, resolve_energy_models
from .operations import (EXPANDED_VIEW, INTEGER_VIEW, LayerOps, OperationCounter, counts_per_image, expanded_counts,
                         multi_level)

E_MAC = 4.6e-12  # joules per multiply-accumulate (45 nm)
E_AC = 0.9e-12  # joules per accumulate (45 nm)

__all__ = ["E_AC", "E_MAC", "analyze", "convention", "energy_summary", "first_layer_input", "learned_settings"]


def convention(e_mac: float = E_MAC, e_ac: float = E_AC) -> str:
    """The SDT paper's convention, in words (energies in joules)."""
    return ENERGY_MODELS["sdt"].convention({"e_mac": e_mac * 1e12, "e_ac": e_ac * 1e12})


def energy_summary(layers: Iterable[LayerOps], e_mac: float = E_MAC, e_ac: float = E_AC) -> tuple[list[dict], dict]:
    """Per-layer rows and totals (operations and joules per image) from counted layers."""
    rows, totals = [], dict(dense_macs_per_step=0, mac_ops=0.0, sops=0.0, energy_snn_j=0.0)
    for layer in layers:
        ops = layer.ops_per_image()
        energy = (e_ac if layer.spike_input else e_mac) * ops
        rows.append(
            dict(
                name=layer.name,
                type=layer.module_type,
                kind=layer.kind,
                time_steps=layer.time_steps,
                macs_per_step=layer.macs_per_step,
                input_firing_rate=layer.input_rate() if layer.spike_input else None,
                input_firing_rate_per_step=layer.input_rate_per_step() if layer.spike_input else None,
                sops=ops,
                energy_j=energy,
            )
        )
        totals["dense_macs_per_step"] += layer.macs_per_step
        totals["sops" if layer.spike_input else "mac_ops"] += ops
        totals["energy_snn_j"] += energy
    totals["energy_ann_j"] = e_mac * totals["dense_macs_per_step"]
    ann = totals["energy_ann_j"]
    totals["snn_to_ann_energy_ratio"] = totals["energy_snn_j"] / ann if ann else None
    return rows, totals


def _time_steps(counter: OperationCounter, recorder: SpikeRecorder) -> Optional[int]:
    """The T every layer and neuron ran over; a layer that runs once per image on time-averaged features
    (Spikformer's head) counts one step and does not disagree."""
    steps = {layer.time_steps for layer in counter.layers()} | {c.numel() for c in recorder.spike_counts.values()}
    if len(steps) > 1:
        steps.discard(1)
    if len(steps) > 1:
        raise ValueError(f"layers ran over different numbers of time steps {sorted(steps)}; cannot attribute operations")
    return steps.pop() if steps else None


def _spec_dict(model: nn.Module, attr: str) -> Optional[dict]:
    spec = getattr(model, attr, None)
    return spec.to_dict() if spec is not None else None


def first_layer_input(counter: OperationCounter, rows: Sequence[dict], encoder: Optional[Callable]) -> dict:
    """What the layer reading the model's input received, and how its operations were counted."""
    row = next((r for r in rows if r["name"] == counter.input_layer), None)
    binary = bool(getattr(encoder, "binary", False))
    encoding = getattr(encoder, "name", "direct") if encoder is not None else "direct"
    if binary:
        what = f"binary spikes from the {encoding} encoding"
    elif encoder is not None:
        what = f"real values from the {encoding} encoding"
    else:
        what = "the analogue input as loaded (no encoding)"
    kind = row["kind"] if row else None
    how = {"AC": "counted as ACs (SOPs = fr_in x T x MACs)", "MAC": "counted as MACs (T x MACs)"}
    how = how.get(kind, "not counted")
    layer = f" ({counter.input_layer})" if counter.input_layer else ""
    return dict(encoding=encoding, binary=binary, layer=counter.input_layer, kind=kind,
                line=f"first layer{layer}: {what}, {how}")


def analyze(
    model: nn.Module,
    loader: Iterable,
    device: Union[str, torch.device],
    amp: str = "none",
    e_mac: float = E_MAC,
    e_ac: float = E_AC,
    energy_models: Optional[Sequence[tuple[EnergyModel, dict]]] = None,
    recorders: Sequence = (),
    encoder: Optional[Callable] = None,
) -> dict:
    """Evaluate ``model`` (already on ``device``) over ``loader`` batches ``(images, labels, ...)``.

    The pass is training's own (``engine.loop.evaluate``), with a spike recorder and an operation
    counter over it. Everything is weighted by samples. Returns plain Python values (JSON-ready):
    accuracy in percent, mean cross-entropy loss, neuron firing rates, per-layer operations, and energy per
    image under each of ``energy_models`` (``resolve_energy_models``; default
    ``sdt`` with ``e_mac`` / ``e_ac``); for a model with multi-level spikes also ``energy_expanded``, the
    same models over the operations of its spikes run as binary ones (``energy_views`` says how each view
    counts). ``amp``: none, bf16 or fp16. ``recorders``: further context
    managers over the model (a ``MembraneRecorder``), active during the same pass. ``encoder``: the input
    encoding applied to each batch (``encodings.build_encoder``); a binary one makes the first layer spike-fed,
    and ``input`` says what that layer read and how it was counted.
    """
    device = torch.device(device)
    sdt_constants = {"e_mac": e_mac * 1e12, "e_ac": e_ac * 1e12}
    if energy_models is None:
        energy_models = resolve_energy_models(["sdt"], sdt_constants)
    recorder = SpikeRecorder(model)
    counter = OperationCounter(model, input_spikes=bool(getattr(encoder, "binary", False)))
    metrics = evaluate(model, loader, device, amp=amp, recorders=(recorder, counter, *recorders), encoder=encoder)
    samples, num_classes = metrics["eval_images"], metrics["num_classes"]
    if not samples:
        raise DataError("the evaluation loader yielded no samples")
    per_step, mean_rate = recorder.firing_rates()
    rates = {name: {"per_step": r.tolist(), "mean": float(r.mean())} for name, r in per_step.items()}
    layers, totals = energy_summary(counter.layers(), e_mac, e_ac)
    counts = counts_per_image(counter, recorder)
    result = dict(
        samples=samples,
        time_steps=_time_steps(counter, recorder),
        num_classes=num_classes,
        top1=metrics["eval_top1"],
        top5=metrics["eval_top5"],
        top5_k=min(5, num_classes),
        loss=metrics["eval_loss"],
        mean_firing_rate=mean_rate,
        neuron=_spec_dict(model, "neuron_spec"),
        attn_neuron=_spec_dict(model, "attn_neuron_spec"),
        learned_neuron_settings=learned_settings(model),
        firing_rates=rates,
        layers=layers,
        totals=totals,
        energy_constants=dict(e_mac_j=e_mac, e_ac_j=e_ac),
        convention=convention(e_mac, e_ac),
        input=first_layer_input(counter, layers, encoder),
        energy=estimate(counts, energy_models),
    )
    if multi_level(recorder):  # multi-level spikes: also priced as the binary spikes they stand for
        levels = sorted({m.output_levels() for m in recorder.layers.values()} - {1})
        result["energy_views"] = dict(levels=levels, integer=INTEGER_VIEW, expanded=EXPANDED_VIEW)
        result["energy_expanded"] = estimate(expanded_counts(counter, recorder, counts), energy_models)
    return result
