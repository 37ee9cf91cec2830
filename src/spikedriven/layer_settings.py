"""Execution settings that the layers of a model hold (how a neuron runs its T steps, what backward keeps):
set on every layer of a model at once, or within a block. A layer takes part by having the attribute."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from torch import nn


class LayerSetting:
    """One such setting: the attribute its layers hold and the values it takes."""

    def __init__(self, attribute: str, choices: Sequence[str], name: str):
        self.attribute, self.choices, self.name = attribute, tuple(choices), name

    def set(self, module: nn.Module, value: str) -> None:
        """``value`` on ``module`` and every submodule that holds the setting, from now on."""
        self._check(value)
        for m in module.modules():
            if hasattr(m, self.attribute):
                setattr(m, self.attribute, value)

    @contextlib.contextmanager
    def within(self, module: nn.Module, value: str) -> Iterator[nn.Module]:
        """``set`` inside the block; each layer's own value comes back afterwards, exceptions included."""
        self._check(value)
        saved = [(m, getattr(m, self.attribute)) for m in module.modules() if hasattr(m, self.attribute)]
        try:
            self.set(module, value)
            yield module
        finally:
            for m, before in saved:
                setattr(m, self.attribute, before)

    def _check(self, value: str) -> None:
        if value not in self.choices:
            raise ValueError(f"unknown {self.name} {value!r}; valid {self.name}s are: {', '.join(self.choices)}")
