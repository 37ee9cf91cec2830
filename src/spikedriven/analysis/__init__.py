"""What an evaluation measures, layer by layer: accuracy, firing rates, operations, energy.

* ``operations``: the operations each layer, neuron and attention actually computed.
* ``energy``: energy models by name (``sdt``, ``neuron``, ``lemaire``) over those counts.
* ``evaluate``: ``analyze``, one pass over an evaluation set that gathers all of it.
"""

from .energy import ENERGY_MODELS, resolve_energy_models
from .evaluate import E_AC, E_MAC, analyze, convention, energy_summary, learned_settings
from .operations import LayerOps, OperationCounter

__all__ = ["E_AC", "E_MAC", "ENERGY_MODELS", "LayerOps", "OperationCounter", "analyze", "convention",
           "energy_summary", "learned_settings", "resolve_energy_models"]
