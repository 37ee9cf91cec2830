"""Model definitions; importing this package registers them with timm."""

from .sdt import SpikeDrivenTransformer, sdt

__all__ = ["SpikeDrivenTransformer", "sdt"]
