"""The documentation as the tests read it: README.md and every page under docs/, and their code blocks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(lang: str | None = None) -> list[tuple[Path, str]]:
    """Every fenced block (of language ``lang``, or all of them) as (file, text)."""
    found = []
    for path in DOC_FILES:
        for kind, text in re.findall(r"^```(\w*)\n(.*?)^```$", path.read_text(), re.DOTALL | re.MULTILINE):
            if lang is None or kind == lang:
                found.append((path, text))
    return found


def block_with(lang: str, *words: str) -> str:
    """The one ``lang`` block of the docs that contains every one of ``words``."""
    (text,) = [t for _, t in blocks(lang) if all(w in t for w in words)]
    return text


def all_text() -> str:
    return "\n".join(p.read_text() for p in DOC_FILES)
