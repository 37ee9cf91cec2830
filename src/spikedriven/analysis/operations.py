"""What a model computed during an evaluation, counted from the model itself.

While an ``OperationCounter`` is active:

* every ``nn.Conv2d``, ``nn.Conv1d`` and ``nn.Linear`` reports the input it actually received
  (dense MACs, spike events or real values), so the layer -> input mapping
  needs no layer names and follows any architecture;
* every ``nn.MaxPool2d`` reports its compares, and every batch norm and layer
  with a bias its bias adds: at inference a batch norm folds into the
  convolution before it (its scale into the weights, at no cost; its shift into
  that convolution's bias, which absorbs the convolution's own bias);
* every module with an ``inference_ops(inputs, output)`` method reports what
  it computes outside its layers and neurons (the attention's spike masks and
  token sums, residual additions), so a new block declares its own.

A layer counts as spike-fed when every input it sees is a spike k / levels
(k = 0 .. levels), each counting k events. A layer that reads sums of spikes
(Spikformer's residual stream: 0, 1, 2, ... for binary spikes) sets
``spike_count_input = True``: then any k / levels with k >= 0 is k events.

``counts_per_image`` turns this, and a ``SpikeRecorder``'s neuron steps, into
the per-image ``energy.Counts`` that every energy model reads.

Layout conventions (those of ``spikedriven.models``), with B the batch size of
the model's input:

* ``Conv2d`` / ``Conv1d`` input ``[T*B, C, H, W]`` / ``[T*B, C, N]``: time folded into the batch, time-major.
* ``Linear`` input ``[T, B, ..., D]`` when it has 3 or more dimensions, else
  ``[T*B, D]`` folded like a conv input.

T is therefore derived per layer from its input and B, so a 5-D input that
brings its own number of time steps is counted correctly.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..engine.recorder import SpikeRecorder
from .energy import Counts, LayerCount, NeuronCount

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
    output_elements: int = 0  # output elements per step, summed over samples
    weights: int = 0

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


LAYERS = (nn.Conv2d, nn.Conv1d, nn.Linear)  # the layers whose synaptic operations are counted


def _macs_per_output(module: nn.Module) -> int:
    """Multiply-accumulates behind one output element."""
    if isinstance(module, (nn.Conv2d, nn.Conv1d)):
        return module.in_channels // module.groups * math.prod(module.kernel_size)
    return module.in_features


def _pool_compares(module: nn.MaxPool2d, inputs, output: torch.Tensor) -> dict:
    """A k x k window's maximum takes k^2 - 1 compares per output element."""
    size = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
    return {"compare": output.numel() * (size[0] * size[1] - 1)}


class OperationCounter:
    """Context manager counting dense MACs and input firing rates of every Conv2d / Linear, and
    the operations of max-pools and of modules that declare ``inference_ops``.

    Hooks exist only inside the ``with`` block. The model's first positional
    argument must be batch-first (``[B, ...]``): its size gives B.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.targets = OrderedDict(
            (name, m) for name, m in model.named_modules() if isinstance(m, LAYERS)
        )
        self.stats: "OrderedDict[str, LayerOps]" = OrderedDict(
            (name, LayerOps(name, type(m).__name__)) for name, m in self.targets.items()
        )
        # modules computing outside their layers and neurons; for a batch, {kind: operations}
        self.structure_targets = OrderedDict(
            (name, functools.partial(_pool_compares, m) if isinstance(m, nn.MaxPool2d) else m.inference_ops)
            for name, m in model.named_modules()
            if isinstance(m, nn.MaxPool2d) or callable(getattr(m, "inference_ops", None))
        )
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.structure: dict[str, float] = {}  # summed over samples
        self.samples = 0
        # this forward's outputs of layers with a bias: (weak reference to their storage's owner, address, elements)
        self._biased: list = []
        self._batch: Optional[int] = None
        self._handles: list = []
        self.levels = getattr(model, "spike_levels", 1)  # of the spikes a layer without its own `levels` sees

    def _record_batch(self, module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            raise ValueError("OperationCounter needs the model's input tensor as its first positional argument")
        self._batch = args[0].shape[0]
        self.samples += self._batch
        self._biased = []

    def _hook(self, name: str):
        def record(module, inputs, output):
            x = _time_major(module, inputs[0].detach(), self._batch)
            t, b = x.shape[:2]
            stats = self.stats[name]
            macs = output.numel() // (t * b) * _macs_per_output(module)
            if stats.input_sum is None:
                stats.time_steps, stats.macs_per_step = t, macs
                stats.weights = module.weight.numel()
                stats.input_sum = torch.zeros(t, dtype=torch.float64)
            elif (t, macs) != (stats.time_steps, stats.macs_per_step):
                raise ValueError(
                    f"layer {name}: time steps or MACs per image changed from "
                    f"{stats.time_steps}, {stats.macs_per_step} to {t}, {macs} while counting"
                )
            stats.input_elements += x[0].numel()
            stats.output_elements += output.numel() // t
            if getattr(module, "bias", None) is not None:
                self._add("bias", output.numel())
                # a view (F.linear's output for a 3-D or larger input) may be gone when a batch norm reads a further
                # view of it; its base lives as long as any view of it does
                owner = output if output._base is None else output._base
                self._biased.append((weakref.ref(owner), output.data_ptr(), output.numel()))
            if x.is_meta:  # a model built on the meta device has shapes and no values: the dense count only
                stats.spike_input = False
                return
            # spikes take the values k / levels (binary: levels 1); a level k is k accumulations at inference
            levels = getattr(module, "levels", None) or self.levels
            events = x.double() * levels
            whole = events.round()
            # a layer reading sums of spikes says so: any count k >= 0 is k events
            bounded = not getattr(module, "spike_count_input", False)
            stats.spike_input = stats.spike_input and bool(
                ((events - whole).abs() < 1e-4 * levels).all() and (whole >= 0).all()
                and (not bounded or (whole <= levels).all()))
            stats.input_sum += (whole if stats.spike_input else x.double()).sum(dim=(1, 2)).cpu()

        return record

    def _add(self, kind: str, n: float) -> None:
        self.structure[kind] = self.structure.get(kind, 0) + n

    def _structure_hook(self, count):
        def record(module, inputs, output):
            for kind, n in count(inputs, output).items():
                self._add(kind, n)

        return record

    def _norm_hook(self, module, inputs, output):
        self._add("bias", output.numel())
        for i, (ref, address, elements) in enumerate(self._biased):
            if ref() is not None and address == inputs[0].data_ptr():
                self._add("bias", -elements)  # the folded shift absorbs the layer's own bias
                del self._biased[i]
                break

    def __enter__(self) -> "OperationCounter":
        self._handles = [self.model.register_forward_pre_hook(self._record_batch)]
        self._handles += [m.register_forward_hook(self._hook(name)) for name, m in self.targets.items()]
        modules = dict(self.model.named_modules())
        self._handles += [modules[name].register_forward_hook(self._structure_hook(count))
                          for name, count in self.structure_targets.items()]
        self._handles += [m.register_forward_hook(self._norm_hook) for m in self.norms]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def layers(self) -> list[LayerOps]:
        """Layers that ran at least once, in definition order."""
        return [s for s in self.stats.values() if s.input_sum is not None]


def dense_size(model: nn.Module, in_chans: int, img_size: int) -> tuple[int, int]:
    """Parameters, and dense MACs per image and time step (bias excluded), of ``model`` at this input size; a
    model on the meta device (built under ``torch.device("meta")``) is sized from its shapes alone, at no cost."""
    params = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    training = model.training
    model.eval()  # one image: batch norm uses its running statistics
    try:
        # one step suffices: the dense count per step does not depend on T
        with torch.no_grad(), OperationCounter(model) as counter:
            model(torch.zeros(1, 1, in_chans, img_size, img_size, device=device))
    finally:
        model.train(training)
    return params, sum(layer.macs_per_step for layer in counter.layers())


def counts_per_image(counter: OperationCounter, recorder: SpikeRecorder) -> Counts:
    """Per image: every layer's operations and traffic, every neuron layer's steps and spikes, and
    the structure's operations."""
    n = counter.samples
    if not n:
        raise ValueError("nothing was counted: the model ran on no samples")
    layers = []
    for s in counter.layers():
        events = float(s.input_sum.sum()) / n if s.spike_input else s.input_elements / n * s.time_steps
        layers.append(LayerCount(s.name, s.spike_input, s.time_steps, s.macs_per_step, s.ops_per_image(), events,
                                 s.output_elements / n, s.weights))
    neurons = []
    elements = recorder.element_counts  # read once: each read collects and copies from the device
    for name, counts in recorder.spike_counts.items():
        module = recorder.layers[name]
        ops = module.ops
        neurons.append(NeuronCount(name, module.name, counts.numel(), elements[name] / n,
                                   float(counts.sum()) / n, ops.add, ops.mul, ops.compare, ops.select,
                                   ops.state_reads, ops.state_writes))
    structure = {kind: total / n for kind, total in counter.structure.items()}
    return Counts(layers, neurons, structure)
