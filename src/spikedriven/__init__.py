"""spikedriven: train, evaluate and study Spike-driven Transformers with LIF / IF neurons.

Importing the package registers the ``sdt`` model with timm::

    import spikedriven, timm
    model = timm.create_model("sdt", num_classes=10, spike_mode="if_soft", v_threshold=1.0)
"""

import signal as _signal
import sys as _sys


def _started_as_command() -> bool:
    argv = getattr(_sys, "orig_argv", [])
    return argv[1:3] == ["-m", "spikedriven"] or any(a.rsplit("/", 1)[-1] in ("spikedriven", "train.py", "firing_num.py")
                                                     for a in argv[:2])


# A Ctrl-C while the command starts (importing torch takes seconds) is held until the imports are done:
# raised inside a C extension's import it leaves a half-initialised module behind and a traceback from
# deep inside torch. A program that imports the package keeps Python's own handling.
_held = []
_previous = _signal.signal(_signal.SIGINT, lambda *_: _held.append(1)) if _started_as_command() else None

from .engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .errors import CheckpointError, ConfigError, DataError, SpikedrivenError  # noqa: E402
from .models import SpikeDrivenTransformer  # noqa: E402
from .engine.recorder import SpikeRecorder  # noqa: E402
from .neurons import NeuronSpec, SpikingNeuron, create_neuron  # noqa: E402

if _previous is not None:
    _signal.signal(_signal.SIGINT, _previous)
    if _held:
        print("interrupted during start-up: nothing was started", file=_sys.stderr)
        raise SystemExit(130)

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
