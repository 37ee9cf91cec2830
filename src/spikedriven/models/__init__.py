"""The architectures, one file each, registered with timm and with the architecture registry.

    registry.py     Architecture: an architecture's settings, entry points, checks and original checkpoints
    base.py         what every architecture shares: the neuron passed in, the time axis, timm's contract
    sdt.py          the Spike-driven Transformer (SDT-V1), its blocks in sdt_blocks.py
    (every other module here is an architecture too: it is imported, and registered, on its own)

    build_model(cfg)  # the model a Config describes
"""

from .base import SpikingModel, renamed_args
from .registry import ARCHITECTURES, Architecture, architecture_of, model_names, register_architecture


def _register_builtin_architectures() -> None:
    """Import every architecture module of this package: a new architecture is one new file, found here."""
    import importlib
    import pkgutil

    infrastructure = {"base", "registry"}
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in infrastructure:
            importlib.import_module(f"{__name__}.{module.name}")


_register_builtin_architectures()

from .sdt import SpikeDrivenTransformer  # noqa: E402  (the study's model, exported by name)

__all__ = ["ARCHITECTURES", "Architecture", "SpikeDrivenTransformer", "SpikingModel", "architecture_of", "build_model",
           "model_names", "register_architecture", "renamed_args"]


def build_model(cfg):
    """The model a ``spikedriven.config.Config`` describes, through timm's registry."""
    import timm

    return timm.create_model(cfg.model, **cfg.model_kwargs())
