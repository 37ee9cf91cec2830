"""``latency``: time-to-first-spike coding, one spike per pixel, the brighter the earlier. Deterministic."""

from __future__ import annotations

import torch

from .base import Encoding
from .registry import register_encoding
from ..neurons.spec import Param, is_number


def _unit(value, settings):
    return None if is_number(value) and 0 <= value < 1 else "must lie in [0, 1)"


@register_encoding
class Latency(Encoding):
    name = "latency"
    title = ("one spike per channel and pixel at step round((1 - intensity) x (T - 1)) (intensity 1 at step 0), "
             "none for intensity <= threshold; intensity: the pixel in [0, 1], the normalisation undone")
    params = {"threshold": Param(0.0, "pixels of intensity at or below this never fire (0: black pixels stay "
                                      "silent rather than firing at the last step)", check=_unit)}
    binary = True

    def encode(self, images, uniforms):
        intensity = self.intensity(images)
        # torch.round rounds halves to even, as Python's round: intensity 0.375 at T = 5 fires at step 2
        step = torch.round((1.0 - intensity) * (self.time_steps - 1)).long()
        steps = torch.arange(self.time_steps, device=images.device).view(1, -1, 1, 1, 1)
        fires = (steps == step.unsqueeze(1)) & (intensity > self.threshold).unsqueeze(1)
        return fires.to(images.dtype)
