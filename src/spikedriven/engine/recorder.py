"""Recording what neuron layers emit during a forward pass.

Hooks exist only inside a ``with SpikeRecorder(model)`` block, so a model that
is not being recorded pays nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from ..neurons import SpikingNeuron
from .distributed import DistInfo, all_reduce_sum


def neuron_layers(model: nn.Module) -> "OrderedDict[str, SpikingNeuron]":
    """Every neuron layer of ``model`` by qualified name, in definition order."""
    return OrderedDict((name, m) for name, m in model.named_modules() if isinstance(m, SpikingNeuron))


class SpikeRecorder:
    """Context manager recording every neuron layer's output spikes ``[T, B, ...]``.

    Always keeps running per-time-step spike counts, so firing rates over many
    batches are weighted by samples (a partial last batch counts for what it
    holds). A multi-level spike ``k / levels`` counts as k spikes (events), so
    such a layer's firing rate is events per neuron and step and may exceed 1. With ``keep_spikes=True`` it also keeps the spike tensors themselves.
    """

    def __init__(self, model: nn.Module, keep_spikes: bool = False):
        self.layers = neuron_layers(model)
        self.keep_spikes = keep_spikes
        self.spikes: dict[str, list[torch.Tensor]] = {}
        self._counts: dict[str, torch.Tensor] = {}  # [T] float64 on the model's device: spikes per step
        self.element_counts: dict[str, int] = {}  # neurons x samples seen per step
        self._handles: list = []

    @property
    def spike_counts(self) -> dict[str, torch.Tensor]:
        """Per layer: spikes counted at each time step ``[T]`` (float64, on CPU)."""
        return {name: counts.cpu() for name, counts in self._counts.items()}

    def _hook(self, name: str):
        def record(module, inputs, output):
            out = output.detach()
            # summed on the device: reading back per layer and batch would stall the GPU
            per_step = out.reshape(out.shape[0], -1).sum(dim=1, dtype=torch.float64)
            levels = module.output_levels()
            if levels != 1:  # a multi-level spike k / levels is k events
                per_step = per_step * levels
            if name in self._counts and self._counts[name].shape == per_step.shape:
                self._counts[name] += per_step
            elif name in self._counts:
                raise ValueError(f"layer {name}: time steps changed from {self._counts[name].numel()} to {per_step.numel()} while recording")
            else:
                self._counts[name] = per_step
            self.element_counts[name] = self.element_counts.get(name, 0) + out[0].numel()
            if self.keep_spikes:
                self.spikes.setdefault(name, []).append(out)

        return record

    def __enter__(self) -> "SpikeRecorder":
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def firing_rates(self, dist: Optional[DistInfo] = None) -> tuple["OrderedDict[str, torch.Tensor]", Optional[float]]:
        """Per layer, the firing rate at each time step ``[T]`` (float64, on CPU), and the mean firing rate:
        spikes over the neuron-steps of all layers (weighted by neurons). Under torchrun (``dist``) both cover
        every sample of every rank: the counts are summed over the ranks in one all-reduce."""
        names = [name for name in self.layers if name in self._counts]
        if not names:
            return OrderedDict(), None
        device = self._counts[names[0]].device
        # one tensor for every layer's counts and neurons, so the ranks exchange them in one call
        packed = torch.cat([torch.cat([self._counts[n].to(device), torch.tensor([float(self.element_counts[n])],
                                       dtype=torch.float64, device=device)]) for n in names])
        packed = (all_reduce_sum(packed, dist) if dist is not None else packed).cpu()
        rates, spikes, slots, start = OrderedDict(), 0.0, 0.0, 0
        for name in names:
            steps = self._counts[name].numel()
            counts, elements = packed[start:start + steps], float(packed[start + steps])
            start += steps + 1
            rates[name] = counts / elements
            spikes, slots = spikes + float(counts.sum()), slots + elements * steps
        return rates, (spikes / slots if slots else None)
