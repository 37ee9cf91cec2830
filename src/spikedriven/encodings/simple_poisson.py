"""``simple_poisson``: the study code's rate coding (SPEC 13.2), kept exactly as it computes it."""

from __future__ import annotations

import torch

from .base import Encoding
from .registry import register_encoding


@register_encoding
class SimplePoisson(Encoding):
    name = "simple_poisson"
    title = ("the study's rate coding: r = sigmoid(x) of the normalised image, a spike where U[0,1) <= r, per "
             "sample, step, channel and pixel (a black pixel still fires, at the sigmoid of its normalised value)")
    binary = True
    random = True

    def encode(self, images, uniforms):
        rate = torch.sigmoid(images.float()).unsqueeze(1)
        return (uniforms <= rate).to(images.dtype)
