"""``direct``: the analogue image itself, which the model repeats at each of its T steps (SDT's own input)."""

from __future__ import annotations

from .base import Encoding
from .registry import register_encoding


@register_encoding
class Direct(Encoding):
    name = "direct"
    title = "the analogue (normalised) image at every step; the first layer multiplies real values"

    def encode(self, images, uniforms):
        return images  # left 4-D: the model's own repetition over T costs no copy
