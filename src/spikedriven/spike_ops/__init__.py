"""Autograd operations for spiking layers that keep less for the backward pass.

* Spike inputs as bool. A convolution, a linear layer, a product (also an
  attention's products of spike matrices) or a max-pool keeps its
  input for backward. A spike tensor holds only 0 and 1, so it is kept as
  ``torch.bool`` (1 byte instead of 4 for fp32) and turned back into the
  compute dtype when backward needs it; multi-level spikes ``k / levels``
  (``levels`` > 1) are kept as the uint8 ``k``, exactly. The model calls
  these only on neuron outputs and on pools or products of them, which take
  those values by construction; the functions do not check it, as a check
  would cost a device synchronisation on every call.
* Batch norm, then neuron or max-pool (``norm_neuron``, ``norm_then``):
  backward recomputes the normalised tensor and what follows it (membrane
  potentials, pooling indices) from the batch norm's input instead of keeping
  them. A neuron's forward takes only its input current; ``norm_neuron(x,
  norm, neuron, pre)`` is the fusion, with the neuron as an argument.

* Convolution, batch norm, then neuron (``norm_neuron`` / ``norm_then`` with
  ``pre`` layers, in the ``"min"`` mode only): backward also recomputes the
  convolution (and a max-pool before it) from its spike input, so that of the
  whole chain only the spikes are kept, as bool. That costs one more forward
  convolution per layer.

Forward results and gradients are identical to the plain PyTorch operations;
only the memory held between forward and backward shrinks. For the CIFAR SDT
at batch 256 in fp32: 9,631 MiB (full), 3,693 MiB (lean, 38 %), 1,284 MiB
(min, 13 %). Lean applies on accelerators by default (``backward_memory_for``).
Each layer that calls these holds its mode (``backward_memory``; its class is
declared with ``@holds_backward_memory``) and passes it on (``memory=``);
``set_backward_memory(model, mode)`` sets it on a whole model (a run sets the
config key ``backward_memory``, as its ``Runtime`` resolved it),
``memory_mode(model, mode)`` within a block, and ``keep_full_tensors(model)``
is the plain reference of benchmarks and tests.

    layers.py     the memory modes; convolution (1-d, 2-d), linear layer, max-pool and product of spikes kept
                  as bool / uint8
    attention.py  spike_attention: products of spike matrices (q kᵀ v), recomputed in backward
    norm.py       norm_neuron, norm_then: batch norm (after a convolution) and a neuron or pool, recomputed in backward
    expansion.py  binary_expansion: multi-level spikes k / D run as k binary spikes over D sub-steps (inference),
                  and the count of their products for the energy models' expanded view
"""

from .attention import ATTENTION_ORDERS, attention_products, spike_attention
from .expansion import binary_expansion
from .layers import (BACKWARD_MEMORY, MEMORY_MODES, SpikeConv1d, SpikeConv2d, SpikeLinear, SpikeMaxPool2d,
                     backward_memory_for, holds_backward_memory, keep_full_tensors, memory_mode, saved_tensor_bytes,
                     set_backward_memory, spike_conv1d, spike_conv2d, spike_linear, spike_max_pool2d, spike_mul)
from .norm import Neuron, norm_neuron, norm_then, per_step, recomputing

__all__ = [
    "ATTENTION_ORDERS", "BACKWARD_MEMORY", "MEMORY_MODES", "Neuron", "SpikeConv1d", "SpikeConv2d", "SpikeLinear",
    "SpikeMaxPool2d", "attention_products", "backward_memory_for", "binary_expansion", "holds_backward_memory",
    "keep_full_tensors", "memory_mode", "norm_neuron", "norm_then", "per_step", "recomputing", "saved_tensor_bytes",
    "set_backward_memory", "spike_attention", "spike_conv1d", "spike_conv2d", "spike_linear", "spike_max_pool2d",
    "spike_mul",
]  # fmt: skip
