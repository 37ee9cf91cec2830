"""What every figure of the toolkit shares: titles that fit their width, and PNGs written whole.

Constrained layout moves axes to make room for text but never shortens a line, so a title longer
than its figure is clipped at both ends: titles are wrapped to the width they have instead.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Iterable, Optional, Union

from matplotlib.figure import Figure

from .atomic import atomic_write

__all__ = ["EM_PER_CHAR", "caption", "save_png", "text_width", "wrap"]

# DejaVu Sans: digits are 0.6 em wide, lower case and punctuation mostly less; a line of capitals would
# be wider, and is not what these figures write
EM_PER_CHAR = 0.62


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (its own line
    breaks kept)."""
    chars = max(12, int(width_in * 72 / (fontsize * EM_PER_CHAR) + 1e-6))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) or line for line in text.split("\n"))


def text_width(chars: int, fontsize: float) -> float:
    """About how many inches ``chars`` characters take at ``fontsize`` points."""
    return chars * fontsize * EM_PER_CHAR / 72


def caption(parts: Iterable[Optional[str]]) -> str:
    """The parts that are known, joined: 'run a | checkpoint last.pth.tar (epoch 3) | neuron lif'."""
    return " | ".join(p for p in parts if p)


def save_png(fig: Figure, path: Union[str, os.PathLike], dpi: int = 120, compress_level: int = 6) -> Path:
    """``fig`` as a PNG at ``path``, replacing it whole: a reader never sees half an image."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, pil_kwargs={"compress_level": compress_level})
    return path
