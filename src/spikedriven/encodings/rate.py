"""``rate``: Bernoulli spikes at the pixel's own intensity, the usual rate coding (a black pixel never fires)."""

from __future__ import annotations

from .base import Encoding
from .registry import register_encoding
from ..neurons.spec import Param, is_number


def _non_negative(value, settings):
    return None if is_number(value) and value >= 0 else "must be >= 0"


@register_encoding
class Rate(Encoding):
    name = "rate"
    title = ("Bernoulli spikes of probability clamp(gain x intensity, 0, 1) per step, channel and pixel; intensity: "
             "the pixel in [0, 1], the dataset's normalisation undone")
    params = {"gain": Param(1.0, "spike probability per unit of intensity (clamped to 1)", check=_non_negative)}
    binary = True
    random = True

    def encode(self, images, uniforms):
        probability = (self.intensity(images) * self.gain).clamp_(0.0, 1.0).unsqueeze(1)
        return (uniforms < probability).to(images.dtype)  # < : probability 0 never fires, 1 always
