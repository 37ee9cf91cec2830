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

The layer that reads the model's input (the first to run in each forward) sees whatever the input is: an
analogue image, counted by the rule above (real values: MACs), or the binary frames of an encoding whose
``binary`` is true (``input_spikes``): then its input is binary spikes whatever the model's own levels, each 1
an event, and any other value there is an error rather than a guess.

``counts_per_image`` turns this, and a ``SpikeRecorder``'s neuron steps, into
the per-image ``energy.Counts`` that every energy model reads.

A model with multi-level spikes has two views of the same forward (``INTEGER_VIEW``, ``EXPANDED_VIEW``):
``counts_per_image`` gives the integer one; ``expanded_counts`` the one in which every multi-level spike is
run as binary spikes over D sub-steps (``spike_ops.binary_expansion``), computed from what the counter
saw: the counts k each layer read (the events of each sub-step), the neurons' levels, the products of
multi-level spikes that ``spike_mul`` / ``spike_attention`` reported and the max-pools over such spikes.

Layout conventions (those of ``spikedriven.models``), with B the batch size of
the model's input:

* ``Conv2d`` / ``Conv1d`` input ``[T*B, C, H, W]`` / ``[T*B, C, N]``: time folded into the batch, time-major.
* ``Linear`` input ``[T, B, ..., D]`` when it has 3 or more dimensions, else
  ``[T*B, D]`` folded like a conv input.

T is therefore derived per layer from its input and B, so a 5-D input that
brings its own number of time steps is counted correctly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..engine.recorder import SpikeRecorder
from ..neurons import StepOps
from ..spike_ops.expansion import ProductTally, binary_frame, spike_counts, watch_products
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
    levels: int = 1  # of the spikes it reads (k / levels)
    # [T, K] float64, multi-level spike input only: how many inputs of each step held the count k = 0 .. K - 1
    level_counts: Optional[torch.Tensor] = None

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

    def count_levels(self, counts: torch.Tensor) -> None:
        """Add the counts k ``[T, B, rest]`` of a batch to ``level_counts``."""
        k = counts.flatten(1).long()
        size = max(int(k.max()) + 1, 0 if self.level_counts is None else self.level_counts.shape[1])
        offsets = torch.arange(k.shape[0], device=k.device).unsqueeze(1) * size  # one histogram per step
        found = torch.bincount((k + offsets).flatten(), minlength=k.shape[0] * size).view(-1, size).double().cpu()
        if self.level_counts is not None:
            found[:, :self.level_counts.shape[1]] += self.level_counts
        self.level_counts = found

    def sub_step_events(self) -> torch.Tensor:
        """``[T, levels]``: the events of each binary sub-step j = 1 .. levels of each step, an input k / levels
        being the binary frames [k >= j] (a sum of spikes k > levels, floor((k + levels - j) / levels) events)."""
        k = torch.arange(self.level_counts.shape[1], dtype=torch.float64)
        frames = torch.stack([binary_frame(k, j, self.levels) for j in range(1, self.levels + 1)], dim=1)
        return self.level_counts @ frames


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
    argument must be batch-first (``[B, ...]``): its size gives B. ``input_spikes``: the model's input is binary
    spikes (an encoding's frames), so the layer reading it counts accumulates; ``input_layer`` names that layer.
    """

    def __init__(self, model: nn.Module, input_spikes: bool = False):
        self.model = model
        self.input_spikes = input_spikes
        self.input_layer: Optional[str] = None
        self._awaiting_input_layer = False
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
        # for the expanded view: max-pool compares over multi-level spikes, by their levels (summed over samples),
        # and the products of such spikes that spike_mul / spike_attention report (while the block is active)
        self.pool_compares_by_levels: Counter = Counter()
        self.products = ProductTally()
        self._watch = None
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
        self._awaiting_input_layer = True
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
            reads_input = self._awaiting_input_layer
            self._awaiting_input_layer = False
            if reads_input:
                self.input_layer = name
            if reads_input and self.input_spikes:
                stats.levels = 1
                counts = _encoded_counts(name, x)
            else:
                # spikes take the values k / levels (binary: levels 1); a level k is k accumulations at inference;
                # a layer reading sums of spikes says so: any count k >= 0 is k events
                stats.levels = getattr(module, "levels", None) or self.levels
                bounded = not getattr(module, "spike_count_input", False)
                counts = spike_counts(x, stats.levels, bounded) if stats.spike_input else None
            stats.spike_input = counts is not None
            stats.input_sum += (counts if stats.spike_input else x.double()).sum(dim=(1, 2)).cpu()
            if stats.spike_input and stats.levels > 1:
                stats.count_levels(counts)  # which counts came, for the binary sub-steps of the expanded view

        return record

    def _add(self, kind: str, n: float) -> None:
        self.structure[kind] = self.structure.get(kind, 0) + n

    def _structure_hook(self, count):
        def record(module, inputs, output):
            ops = count(inputs, output)
            for kind, n in ops.items():
                self._add(kind, n)
            if isinstance(module, nn.MaxPool2d) and getattr(module, "levels", 1) > 1:
                self.pool_compares_by_levels[module.levels] += ops["compare"]

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
        self._watch = watch_products(self.model, self.products)
        self._watch.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._watch is not None:
            self._watch.__exit__(None, None, None)
            self._watch = None

    def layers(self) -> list[LayerOps]:
        """Layers that ran at least once, in definition order."""
        return [s for s in self.stats.values() if s.input_sum is not None]


def _encoded_counts(name: str, x: torch.Tensor) -> torch.Tensor:
    """The events of a binary encoding's frames, as the model's first layer received them."""
    counts = spike_counts(x, 1)
    if counts is None:
        raise ValueError(f"layer {name} runs first and so should read the model's input, the binary frames of its "
                         "encoding, but it received other values")
    return counts


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


# The two views of a model with multi-level spikes, in words (eval prints and records them).
INTEGER_VIEW = ("integer view: a level-k spike (k / D) is one event worth k accumulations in the layers it feeds; "
                "layers and neurons run the T steps; a product of two multi-level spikes is one small integer multiply")
EXPANDED_VIEW = ("expanded view: a level-k spike is k binary spikes over D sub-steps (frame j: [k >= j]); a layer fed "
                 "by such spikes runs T x D binary sub-steps (the same events; its bias added once per step), a "
                 "multi-level neuron D binary sub-steps per step (its class's binary_ops), a product of a level-a and "
                 "a level-b spike a x b ANDs, of an integer with a level-D spike D adds, a max-pool of level-D spikes "
                 "D ORs per compare")


def multi_level(recorder: SpikeRecorder) -> bool:
    """Whether any neuron layer the recorder watches emits multi-level spikes (then there are two views)."""
    return any(m.output_levels() > 1 for m in recorder.layers.values())


def expanded_counts(counter: OperationCounter, recorder: SpikeRecorder, counts: Optional[Counts] = None) -> Counts:
    """Per image, the operations of the counted forwards with every multi-level spike run as binary spikes
    (``EXPANDED_VIEW``), rewritten from their integer view ``counts`` (``counts_per_image``'s by default)."""
    counts = counts if counts is not None else counts_per_image(counter, recorder)
    layers = []
    for s, layer in zip(counter.layers(), counts.layers):  # the same layers, in the same order
        if s.spike_input and s.level_counts is not None:
            # D binary sub-steps per step, each reading its frame; their events add up to the integer view's,
            # and every event costs the same accumulations, so the SOPs are the integer view's too
            events = float(s.sub_step_events().sum())
            layer = dataclasses.replace(layer, time_steps=s.time_steps * s.levels, input_reads=events / counter.samples,
                                        ops=events * s.macs_per_step / s.input_elements)
        layers.append(layer)
    neurons = [part for count in counts.neurons for part in _binary_neuron(count, recorder.layers[count.name])]
    return Counts(layers, neurons, _binary_structure(counter))


def _binary_neuron(count: NeuronCount, module: nn.Module) -> list[NeuronCount]:
    """A neuron layer in the expanded view: a multi-level one as its D binary sub-steps a step (which emit its
    events, one binary spike each) and what it computes once a step, at its class's ``binary_ops``."""
    levels = module.output_levels()
    if levels == 1:
        return [count]
    ops = type(module).binary_ops
    parts = [dataclasses.replace(count, name=f"{count.name} ({levels} binary sub-steps a step)",
                                 time_steps=count.time_steps * levels, **dataclasses.asdict(ops.sub_step))]
    if ops.step != StepOps():
        parts.append(dataclasses.replace(count, name=f"{count.name} (once a step)", events=0.0,
                                         **dataclasses.asdict(ops.step)))
    return parts


def _binary_structure(counter: OperationCounter) -> dict:
    """The structure operations per image, with those on multi-level spikes as binary ones. The integer view
    counts each product of multi-level spikes as one "mul" (the blocks' ``inference_ops``) and a max-pool's
    compares as "compare"; each ``move`` takes n of those (``source``) and puts ``factor`` x n binary ones
    (``target``) in their place."""
    ops = Counter(counter.structure)
    # a level-a spike times a level-b one: an AND for each pair of their sub-steps
    moves = [("mul", "and", a * b, n) for (a, b), n in counter.products.spike.items()]
    # an integer-valued number times a level-d spike: each of the d binary frames selects one add of it
    moves += [("mul", "add", d, n) for d, n in counter.products.mixed.items()]
    # the maximum of level-d spikes: the maxima of their d binary frames, ORs
    moves += [("compare", "or", d, n) for d, n in counter.pool_compares_by_levels.items()]
    for source, target, factor, n in moves:
        ops[source] -= n
        ops[target] += factor * n
    short = [kind for kind, n in ops.items() if n < 0]
    if short:
        raise ValueError(f"the blocks' inference_ops declare fewer {short[0]!r} operations than the products or "
                         "max-pools of multi-level spikes computed; a block counts each such product as one 'mul'")
    return {kind: n / counter.samples for kind, n in ops.items() if n}
