"""Files that are either whole or absent: a kill mid-write never leaves half a file.

A run or a study decides what is done by which files exist (``results.json``,
``metrics.json``, checkpoints), so every file it relies on is written to a
temporary name in the same folder, flushed to disk and renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_write", "write_text_atomic"]

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing (``"w"`` or ``"wb"``);
    on a clean exit it replaces ``path``, on an exception it is removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; these are ordinary files
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power loss
    finally:
        os.close(dir_fd)


def write_text_atomic(path: PathLike, text: str) -> Path:
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)
