"""Model definitions; importing this package registers them with timm."""

from .sdt import SpikeDrivenTransformer, renamed_args, sdt

__all__ = ["SpikeDrivenTransformer", "build_model", "renamed_args", "sdt"]


def build_model(cfg):
    """The model a ``spikedriven.config.Config`` describes, through timm's registry."""
    import timm

    from ..errors import ConfigError

    try:
        return timm.create_model(cfg.model, **cfg.model_kwargs())
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"unknown model {cfg.model!r}; registered spiking models: sdt") from None
        raise
