"""Evaluation analysis: accuracy, firing rates, synaptic operations and energy.

Operation counts come from the model itself: while an ``OperationCounter`` is
active, every ``nn.Conv2d`` and ``nn.Linear`` reports the input it actually
received, so the layer -> input mapping needs no layer names and follows any
architecture. Energy uses the 45 nm figures of the SNN literature
(E_MAC = 4.6 pJ, E_AC = 0.9 pJ); see ``convention`` for the exact formula.

Layout conventions (those of ``spikedriven.models``), with B the batch size of
the model's input:

* ``Conv2d`` input ``[T*B, C, H, W]``: time folded into the batch, time-major.
* ``Linear`` input ``[T, B, ..., D]`` when it has 3 or more dimensions, else
  ``[T*B, D]`` folded like a conv input.

T is therefore derived per layer from its input and B, so a 5-D input that
brings its own number of time steps is counted correctly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError
from .monitor import SpikeRecorder, neuron_layers

E_MAC = 4.6e-12  # joules per multiply-accumulate (45 nm)
E_AC = 0.9e-12  # joules per accumulate (45 nm)

__all__ = ["E_AC", "E_MAC", "LayerOps", "OperationCounter", "analyze", "convention", "energy_summary"]


@dataclass
class LayerOps:
    """What one Conv2d / Linear layer received, accumulated over batches."""

    name: str
    module_type: str
    macs_per_step: int = 0  # dense MACs per image and time step, bias excluded
    time_steps: int = 0
    spike_input: bool = True  # every input seen so far was spikes (binary, or k / levels)
    input_sum: Optional[torch.Tensor] = None  # [T] float64: sum of the input per step (of its events for spikes)
    input_elements: int = 0  # input elements per step, summed over samples

    @property
    def kind(self) -> str:
        return "AC" if self.spike_input else "MAC"

    def input_rate_per_step(self) -> list[float]:
        return (self.input_sum / self.input_elements).tolist()

    def input_rate(self) -> float:
        return float(self.input_sum.sum() / (self.input_elements * self.time_steps))

    def ops_per_image(self) -> float:
        """SOPs (fr_in x T x MACs) for a spike-fed layer, T x MACs for a real-valued one."""
        dense = float(self.time_steps * self.macs_per_step)
        return self.input_rate() * dense if self.spike_input else dense


def _time_major(module: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """The layer input as ``[T, B, rest]`` following the layout conventions above."""
    if isinstance(module, nn.Linear) and x.dim() >= 3:
        if x.shape[1] != batch:
            raise ValueError(f"a Linear input {tuple(x.shape)} is not [T, B={batch}, ..., D]")
        return x.reshape(x.shape[0], batch, -1)
    if x.shape[0] % batch:
        raise ValueError(f"an input {tuple(x.shape)} has a leading size that is not T x B (B = {batch})")
    return x.reshape(x.shape[0] // batch, batch, -1)


def _macs_per_output(module: nn.Module) -> int:
    """Multiply-accumulates behind one output element."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels // module.groups * kh * kw
    return module.in_features


class OperationCounter:
    """Context manager counting dense MACs and input firing rates of every Conv2d / Linear.

    Hooks exist only inside the ``with`` block. The model's first positional
    argument must be batch-first (``[B, ...]``): its size gives B.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.targets = OrderedDict(
            (name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
        )
        self.stats: "OrderedDict[str, LayerOps]" = OrderedDict(
            (name, LayerOps(name, type(m).__name__)) for name, m in self.targets.items()
        )
        self._batch: Optional[int] = None
        self._handles: list = []
        self.levels = getattr(model, "spike_levels", 1)  # of the spikes a layer without its own `levels` sees

    def _record_batch(self, module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            raise ValueError("OperationCounter needs the model's input tensor as its first positional argument")
        self._batch = args[0].shape[0]

    def _hook(self, name: str):
        def record(module, inputs, output):
            x = _time_major(module, inputs[0].detach(), self._batch)
            t, b = x.shape[:2]
            stats = self.stats[name]
            macs = output.numel() // (t * b) * _macs_per_output(module)
            if stats.input_sum is None:
                stats.time_steps, stats.macs_per_step = t, macs
                stats.input_sum = torch.zeros(t, dtype=torch.float64)
            elif (t, macs) != (stats.time_steps, stats.macs_per_step):
                raise ValueError(
                    f"layer {name}: time steps or MACs per image changed from "
                    f"{stats.time_steps}, {stats.macs_per_step} to {t}, {macs} while counting"
                )
            # spikes take the values k / levels (binary: levels 1); a level k is k accumulations at inference
            levels = getattr(module, "levels", None) or self.levels
            events = x.double() * levels
            whole = events.round()
            stats.spike_input = stats.spike_input and bool(
                ((events - whole).abs() < 1e-4 * levels).all() and (whole >= 0).all() and (whole <= levels).all())
            stats.input_sum += (whole if stats.spike_input else x.double()).sum(dim=(1, 2)).cpu()
            stats.input_elements += x[0].numel()

        return record

    def __enter__(self) -> "OperationCounter":
        self._handles = [self.model.register_forward_pre_hook(self._record_batch)]
        self._handles += [m.register_forward_hook(self._hook(name)) for name, m in self.targets.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def layers(self) -> list[LayerOps]:
        """Layers that ran at least once, in definition order."""
        return [s for s in self.stats.values() if s.input_sum is not None]


def convention(e_mac: float = E_MAC, e_ac: float = E_AC) -> str:
    return (
        f"per image; only Conv2d/Linear layers, MACs without bias; "
        f"E_snn = E_MAC x T x MACs(layers fed by real values: the first conv) + E_AC x sum SOPs(spike-fed layers), "
        f"SOP_l = fr_in(l) x T x MACs_l, fr_in = spike events per input and step (a multi-level spike k / levels is "
        f"k events); E_ann = E_MAC x sum of dense MACs of all layers (one pass, no T); "
        f"E_MAC = {e_mac * 1e12:g} pJ, E_AC = {e_ac * 1e12:g} pJ"
    )


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


def _neuron_rates(recorder: SpikeRecorder) -> tuple[dict, Optional[float]]:
    """Per layer ``{"per_step": [...], "mean": x}`` and the rate over all neurons and steps."""
    rates = {
        name: {"per_step": r.tolist(), "mean": float(r.mean())} for name, r in recorder.firing_rates().items()
    }
    counts = recorder.spike_counts
    spikes = sum(float(c.sum()) for c in counts.values())
    slots = sum(recorder.element_counts[n] * c.numel() for n, c in counts.items())
    return rates, (spikes / slots if slots else None)


def _time_steps(counter: OperationCounter, recorder: SpikeRecorder) -> Optional[int]:
    steps = {layer.time_steps for layer in counter.layers()} | {c.numel() for c in recorder.spike_counts.values()}
    if len(steps) > 1:
        raise ValueError(f"layers ran over different numbers of time steps {sorted(steps)}; cannot attribute operations")
    return steps.pop() if steps else None


def _spec_dict(model: nn.Module, attr: str) -> Optional[dict]:
    spec = getattr(model, attr, None)
    return spec.to_dict() if spec is not None else None


def learned_settings(model: nn.Module) -> dict:
    """Per neuron layer, the current values of its learnable settings (PLIF's tau, a learned threshold)."""
    return {name: values for name, m in neuron_layers(model).items() if (values := m.learned())}


@torch.no_grad()
def analyze(
    model: nn.Module,
    loader: Iterable,
    device: Union[str, torch.device],
    amp_dtype: Optional[torch.dtype] = None,
    e_mac: float = E_MAC,
    e_ac: float = E_AC,
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> dict:
    """Evaluate ``model`` (already on ``device``) over ``loader`` batches ``(images, labels, ...)``.

    Everything is weighted by samples. Returns plain Python values (JSON-ready):
    accuracy in percent, mean loss (``loss_fn`` returns a batch mean; default
    cross-entropy), neuron firing rates, per-layer operations and energy per
    image. Per-step logits ``[T, B, K]`` (TET models) are averaged over T.
    """
    device = torch.device(device)
    loss_fn = loss_fn or F.cross_entropy
    was_training = model.training
    model.eval()
    samples, correct1, correct5, loss_sum, num_classes = 0, 0, 0, 0.0, 0
    try:
        with SpikeRecorder(model) as recorder, OperationCounter(model) as counter:
            for batch in loader:
                images, labels = batch[0].to(device), batch[1].to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(images)
                logits = (logits.mean(0) if logits.dim() == 3 else logits).float()
                n, num_classes = labels.shape[0], logits.shape[-1]
                top = logits.topk(min(5, num_classes), dim=1).indices == labels[:, None]
                correct1 += int(top[:, 0].sum())
                correct5 += int(top.any(dim=1).sum())
                loss_sum += float(loss_fn(logits, labels)) * n
                samples += n
    finally:
        model.train(was_training)
    if not samples:
        raise DataError("the evaluation loader yielded no samples")
    rates, mean_rate = _neuron_rates(recorder)
    layers, totals = energy_summary(counter.layers(), e_mac, e_ac)
    return dict(
        samples=samples,
        time_steps=_time_steps(counter, recorder),
        num_classes=num_classes,
        top1=100.0 * correct1 / samples,
        top5=100.0 * correct5 / samples,
        top5_k=min(5, num_classes),
        loss=loss_sum / samples,
        mean_firing_rate=mean_rate,
        neuron=_spec_dict(model, "neuron_spec"),
        attn_neuron=_spec_dict(model, "attn_neuron_spec"),
        learned_neuron_settings=learned_settings(model),
        firing_rates=rates,
        layers=layers,
        totals=totals,
        energy_constants=dict(e_mac_j=e_mac, e_ac_j=e_ac),
        convention=convention(e_mac, e_ac),
    )
