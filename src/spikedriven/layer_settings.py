"""Execution settings that the layers of a model hold (how a neuron runs its T steps, what backward keeps):
set on every layer of a model at once, or within a block. A layer class takes part by declaring it: the
setting's ``held_by`` decorator on the class, which gives its layers the default value; the setting then
finds them by their class (``isinstance``), subclasses included."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, TypeVar

from torch import nn

Layer = TypeVar("Layer", bound=type)


class LayerSetting:
    """One such setting: the attribute its layers hold, the values it takes, and the layer classes that hold it."""

    def __init__(self, attribute: str, choices: Sequence[str], name: str, default: str):
        self.attribute, self.choices, self.name, self.default = attribute, tuple(choices), name, default
        self._check(default)
        self.holders: tuple[type, ...] = ()  # the classes declared with held_by

    def held_by(self, cls: Layer) -> Layer:
        """Class decorator: ``cls``'s layers (and its subclasses') hold the setting, each at the default until
        it is set."""
        setattr(cls, self.attribute, self.default)
        if cls not in self.holders:
            self.holders += (cls,)
        return cls

    def layers(self, module: nn.Module) -> list[nn.Module]:
        """``module`` and its submodules that hold the setting, in ``modules()`` order."""
        return [m for m in module.modules() if isinstance(m, self.holders)]

    def set(self, module: nn.Module, value: str) -> None:
        """``value`` on ``module`` and every submodule that holds the setting, from now on."""
        self._check(value)
        for m in self.layers(module):
            setattr(m, self.attribute, value)

    @contextlib.contextmanager
    def within(self, module: nn.Module, value: str) -> Iterator[nn.Module]:
        """``set`` inside the block; each layer's own value comes back afterwards, exceptions included."""
        self._check(value)
        saved = [(m, getattr(m, self.attribute)) for m in self.layers(module)]
        try:
            self.set(module, value)
            yield module
        finally:
            for m, before in saved:
                setattr(m, self.attribute, before)

    def _check(self, value: str) -> None:
        if value not in self.choices:
            raise ValueError(f"unknown {self.name} {value!r}; valid {self.name}s are: {', '.join(self.choices)}")
