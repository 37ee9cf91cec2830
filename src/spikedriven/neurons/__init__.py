"""Spiking neurons: the research variable of the study.

One file per neuron family over a common base; each neuron is defined once,
by its settings, equations, cost per step and (if the fused kernels cover its
arithmetic) its fused form, and registered by name:

    spec.py            the plain descriptions: Param, NeuronSpec, StepOps, BinaryOps, FusedForm
    base.py            charge / fire / reset over T steps; ThresholdNeuron fires with a surrogate
    surrogates.py      surrogate gradients, each defined once for the loop and the fused kernels
    integrate_fire.py  if, if_soft, if_learnable
    lif.py             lif, lif_soft, plif
    multispike.py      multispike (SDT-V3's multi-level integer spikes)
    (every other module here is a neuron family too: it is imported, and its neurons registered, on its own)
    fused.py           all T steps in one pass (Triton kernels on CUDA: _triton.py)
    registry.py        register_neuron, create_neuron, the `spikedriven neurons` listing (plugins: spikedriven.plugins)

    create_neuron({"mode": "if_soft", "v_threshold": 1.0})
"""

from .base import NEURON_PATHS, SpikingNeuron, ThresholdNeuron, below_threshold, neuron_path, set_neuron_path
from .fused import fused_available, fused_multi_step, fused_neuron
from .registry import (
    NEURONS, create_neuron, describe_neurons, neuron_class, register_neuron, resolve_spec,
)
from .spec import BinaryOps, FusedForm, NeuronSpec, Param, StepOps
from .surrogates import SURROGATES, Surrogate, register_surrogate


def _register_builtin_families() -> None:
    """Import every neuron-family module of this package: a new family is one new file, found here."""
    import importlib
    import pkgutil

    infrastructure = {"base", "fused", "registry", "spec", "surrogates"}
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in infrastructure:
            importlib.import_module(f"{__name__}.{module.name}")


_register_builtin_families()

__all__ = [
    "NEURONS", "NEURON_PATHS", "SURROGATES", "BinaryOps", "FusedForm", "NeuronSpec", "Param", "SpikingNeuron",
    "StepOps", "Surrogate", "ThresholdNeuron", "below_threshold", "create_neuron", "describe_neurons",
    "fused_available", "fused_multi_step", "fused_neuron", "neuron_class", "neuron_path",
    "register_neuron", "register_surrogate", "resolve_spec", "set_neuron_path",
]  # fmt: skip
