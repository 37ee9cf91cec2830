"""Encodings by name: the registry, the run's encoder and the ``spikedriven encodings`` listing.

An encoding of your own is one class in one file, loaded with ``--plugins my_encodings.py`` as a neuron is::

    from spikedriven.encodings import Encoding, register_encoding

    @register_encoding
    class Inverted(Encoding):
        name, title = "inverted", "the negated image at every step"

        def encode(self, images, uniforms):
            return -images
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import ConfigError, unknown_choice
from ..neurons.spec import Param
from .base import Encoding

__all__ = ["ENCODINGS", "build_encoder", "describe_encodings", "encoding_class", "register_encoding"]

ENCODINGS: dict[str, type[Encoding]] = {}


def register_encoding(cls: type[Encoding]) -> type[Encoding]:
    """Make ``cls`` available as ``--encoding <cls.name>``: a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Encoding)):
        raise TypeError(f"@register_encoding decorates an Encoding subclass, got {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"encoding class {cls.__qualname__} needs a name that is an identifier (its --encoding), "
                        f"got {name!r}")
    taken = ENCODINGS.get(name)
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"an encoding named {name!r} is registered already ({taken.__module__}.{taken.__qualname__})")
    for key, param in cls.params.items():
        if not isinstance(param, Param):
            raise TypeError(f"encoding {name!r}: setting {key!r} must be a Param, got {param!r}")
    ENCODINGS[name] = cls
    return cls


def encoding_class(name: str) -> type[Encoding]:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ConfigError(f"{unknown_choice('encoding', name, ENCODINGS)}; an encoding of your own is loaded "
                          "with --plugins FILE") from None


def build_encoder(cfg: Any, training: bool) -> Optional[Encoding]:
    """The encoding a run applies to its training (``training``) or evaluation batches, bound to its T, the
    dataset's normalisation and its seed; None where the batches go to the model as they are (``direct``, and
    evaluation with ``encode_eval`` false, as the study evaluated)."""
    if cfg.encoding == "direct" or not (training or cfg.encode_eval):
        return None
    return encoding_class(cfg.encoding)(cfg.encoding_settings(), time_steps=cfg.time_steps, mean=cfg.mean,
                                        std=cfg.std, seed=cfg.seed)


def _default(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def describe_encodings() -> str:
    """Every registered encoding: name, what it does, its settings with defaults."""
    lines = []
    for name, cls in ENCODINGS.items():
        kind = "binary spikes" if cls.binary else "real values"
        draws = ", drawn per sample from (seed, epoch, index)" if cls.random else ""
        lines += [f"{name}: {cls.title}", f"  first layer reads {kind}{draws}"]
        for key, param in cls.params.items():
            lines.append(f"  {key:<20} {_default(param.default):<9} {param.doc}")
        lines.append("")
    lines.append("settings: encoding_args: {KEY: VALUE} (flag --encoding-args KEY=VALUE); encode_eval false encodes "
                 "training batches only, as the study did")
    return "\n".join(lines)
