"""Input encodings: how an image batch becomes the model's input over T steps.

One file per encoding over a common base, each registered by name (as the neurons are):

    base.py            Encoding (settings, T, normalisation, seed) and the per-sample hashed draws
    registry.py        register_encoding, build_encoder, the `spikedriven encodings` listing
    direct.py          direct: the analogue image, repeated by the model (the default)
    simple_poisson.py  simple_poisson: the study's sigmoid rate coding
    rate.py            rate: Bernoulli spikes at the pixel's intensity
    latency.py         latency: one spike per pixel, brighter earlier
    (every other module here is an encoding too: it is imported, and registered, on its own)

The engine applies the run's encoder to each batch (training after mixup, evaluation alike unless encode_eval
is false); the model reads 4-D images or 5-D frames as before.
"""

from .base import EVAL_EPOCH, Encoding, hashed_uniforms
from .registry import ENCODINGS, build_encoder, describe_encodings, encoding_class, register_encoding


def _register_builtin_encodings() -> None:
    """Import every encoding module of this package: a new encoding is one new file, found here."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in {"base", "registry"}:
            importlib.import_module(f"{__name__}.{module.name}")


_register_builtin_encodings()

__all__ = ["ENCODINGS", "EVAL_EPOCH", "Encoding", "build_encoder", "describe_encodings", "encoding_class",
           "hashed_uniforms", "register_encoding"]
