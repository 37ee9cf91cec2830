"""Counting what neuron layers emit during forward passes.

Each neuron layer counts its own spikes in its forward while a ``SpikeRecorder``
asks it to (``SpikingNeuron.tally``), so a compiled model is recorded inside its
graph; a model that is not being recorded pays nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from ..neurons import SpikingNeuron
from .distributed import DistInfo, all_reduce_sum


def neuron_layers(model: nn.Module) -> "OrderedDict[str, SpikingNeuron]":
    """Every neuron layer of ``model`` by qualified name, in definition order (a compiled model's under the
    names of the model it compiled)."""
    model = getattr(model, "_orig_mod", model)
    return OrderedDict((name, m) for name, m in model.named_modules() if isinstance(m, SpikingNeuron))


def learned_settings(model: nn.Module) -> dict:
    """Per neuron layer, the current values of its learnable settings (PLIF's tau, a learned threshold)."""
    return {name: values for name, m in neuron_layers(model).items() if (values := m.learned())}


class SpikeRecorder:
    """Context manager counting every neuron layer's output spikes ``[T, B, ...]`` per time step.

    The counts run over every forward inside the block, so firing rates over many batches are weighted by
    samples (a partial last batch counts for what it holds). A multi-level spike ``k / levels`` counts as
    k spikes (events), so such a layer's firing rate is events per neuron and step and may exceed 1.

    ``model`` may be compiled (``torch.compile``): the layers count inside its graph, and one hook on
    ``model`` itself adds each forward's counts to the totals, so recording does not recompile it every
    time. With ``keep_spikes=True`` it also keeps the spike tensors themselves (hooks on every layer, so
    an eager model only).
    """

    def __init__(self, model: nn.Module, keep_spikes: bool = False):
        if keep_spikes and hasattr(model, "_orig_mod"):
            raise ValueError("keep_spikes records through hooks on every layer: give the model before torch.compile")
        self.model = model
        self.layers = neuron_layers(model)
        self.keep_spikes = keep_spikes
        self.spikes: dict[str, list[torch.Tensor]] = {}
        # per layer, [T + 1] float64 on the model's device: spikes at each step, then neurons x samples per step
        self._totals: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def collect(self, *_) -> None:
        """Add the counts the layers hold from the forwards since the last call to the totals (the hook on
        the model calls this after each forward)."""
        totals, tallies = [], []
        for name, layer in self.layers.items():
            tally = layer.spike_tally
            if tally is None:  # a layer the forward did not reach
                continue
            layer.spike_tally = None
            total = self._totals.get(name)
            if total is None:
                self._totals[name] = tally.clone()  # a copy: a CUDA graph reuses its outputs' memory
            elif total.shape != tally.shape:
                raise ValueError(f"layer {name}: time steps changed from {total.numel() - 1} to {tally.numel() - 1} "
                                 "while recording")
            else:
                totals.append(total)
                tallies.append(tally)
        if totals:
            torch._foreach_add_(totals, tallies)  # one kernel for every layer on a GPU

    @property
    def spike_counts(self) -> dict[str, torch.Tensor]:
        """Per layer: spikes counted at each time step ``[T]`` (float64, on CPU)."""
        self.collect()
        return {name: total[:-1].cpu() for name, total in self._totals.items()}

    @property
    def element_counts(self) -> dict[str, int]:
        """Per layer: neurons x samples seen at each step."""
        self.collect()
        if not self._totals:
            return {}
        elements = torch.stack([total[-1] for total in self._totals.values()]).tolist()  # one copy from the device
        return {name: int(n) for name, n in zip(self._totals, elements)}

    def _keep(self, name: str):
        def keep(module, inputs, output):
            self.spikes.setdefault(name, []).append(output.detach())
        return keep

    def __enter__(self) -> "SpikeRecorder":
        for layer in self.layers.values():
            layer.tally_spikes, layer.spike_tally = True, None
        self._handles = [self.model.register_forward_hook(self.collect)]
        if self.keep_spikes:
            self._handles += [m.register_forward_hook(self._keep(name)) for name, m in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.collect()  # forwards of a part of the model (no hook on it ran) count too
        for layer in self.layers.values():
            layer.tally_spikes = False

    def firing_rates(self, dist: Optional[DistInfo] = None) -> tuple["OrderedDict[str, torch.Tensor]", Optional[float]]:
        """Per layer, the firing rate at each time step ``[T]`` (float64, on CPU), and the mean firing rate:
        spikes over the neuron-steps of all layers (weighted by neurons). Under torchrun (``dist``) both cover
        every sample of every rank: the counts are summed over the ranks in one all-reduce."""
        self.collect()
        names = [name for name in self.layers if name in self._totals]
        if not names:
            return OrderedDict(), None
        packed = torch.cat([self._totals[n] for n in names])  # one tensor, so the ranks exchange it in one call
        packed = (all_reduce_sum(packed, dist) if dist is not None else packed).cpu()
        rates, spikes, slots, start = OrderedDict(), 0.0, 0.0, 0
        for name in names:
            steps = self._totals[name].numel() - 1
            counts, elements = packed[start:start + steps], float(packed[start + steps])
            start += steps + 1
            rates[name] = counts / elements
            spikes, slots = spikes + float(counts.sum()), slots + elements * steps
        return rates, (spikes / slots if slots else None)
