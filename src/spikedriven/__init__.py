"""spikedriven: train, evaluate and study Spike-driven Transformers with LIF / IF neurons.

Importing the package registers the ``sdt`` model with timm::

    import spikedriven, timm
    model = timm.create_model("sdt", num_classes=10, spike_mode="if_soft", v_threshold=1.0)
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, ConfigError, DataError, SpikedrivenError
from .models import SpikeDrivenTransformer
from .monitor import SpikeRecorder
from .neurons import NeuronSpec, SpikingNeuron, create_neuron

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "NeuronSpec",
    "SpikeDrivenTransformer",
    "SpikeRecorder",
    "SpikedrivenError",
    "SpikingNeuron",
    "create_neuron",
    "load_checkpoint",
    "save_checkpoint",
]
