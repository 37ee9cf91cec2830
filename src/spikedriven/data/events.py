"""Event-camera data: the raw AEDAT files, SpikingJelly's folder layout, frames by event count.

The layout is SpikingJelly 0.0.0.0.14's, so that a folder prepared by either tool serves both::

    <root>/download/                           the archives
    <root>/extract/                            the raw event files (AEDAT)
    <root>/events_np/                          one .npz per sample: t, x, y, p
    <root>/frames_number_<T>_split_by_number/  one .npz per sample: frames [T, 2, H, W]

``split_by="number"`` cuts a sample's N events, in file order, into T slices
of N // T events (the last slice takes the rest) and counts the events of each
slice per pixel and polarity (p = 0 in channel 0, any other p in channel 1),
as float64, exactly as SpikingJelly computes them.

The readers are written here rather than taken from SpikingJelly 0.0.0.0.14:
its CIFAR10-DVS reader calls ``np.fromstring`` on binary data, which NumPy 2
removed, and its AEDAT 3.1 reader decodes one event per Python loop turn (a
DVS128 Gesture trial holds about a million). These decode whole buffers with
NumPy and give the same arrays (``tests/test_dvs.py`` compares them).
"""

from __future__ import annotations

import os
import struct
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError

EVENT_KEYS = ("t", "x", "y", "p")


def _header_length(data: bytes, end_marker: bytes = b"") -> int:
    """Bytes taken by the ``#`` comment lines at the start of an AEDAT file (and its end marker line)."""
    offset = 0
    while data.startswith(b"#", offset):
        newline = data.find(b"\n", offset)
        if newline < 0:
            return len(data)
        line, offset = data[offset:newline + 1], newline + 1
        if end_marker and line.startswith(end_marker):
            break
    return offset


def read_aedat2(path: str | Path) -> dict:
    """A CIFAR10-DVS recording (AEDAT 2.0: big-endian 32-bit address, 32-bit timestamp per event) as
    ``t, x, y, p``, with the dataset's axes: ``x = 127 - row``, ``y = 127 - column``, ``p = 1 - bit``."""
    path = Path(path)
    data = path.read_bytes()
    body = data[_header_length(data):]
    if len(body) % 8:
        raise DataError(f"event file {path} is truncated: {len(body)} bytes of events is not a whole number of 8-byte events")
    words = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    address, t = words[:, 0], words[:, 1]
    column = (address & 0xFE) >> 1
    row = (address & 0x7F00) >> 8
    polarity = (address & 1).astype(np.int64)
    return {"t": t.astype(np.uint32), "x": (127 - row).astype(np.uint32), "y": (127 - column).astype(np.uint32),
            "p": 1 - polarity}


_PACKET = struct.Struct("<hhiiiiii")  # type, source, event size, ts offset, ts overflow, capacity, number, valid


def read_aedat3(path: str | Path) -> dict:
    """The polarity events of an AEDAT 3.1 recording (DVS128 Gesture) as ``t, x, y, p``; packets of other
    event types are passed over. Each polarity event: a 32-bit word (x in bits 17-31, y in 2-16, p in 1)
    and a 32-bit timestamp, to which the packet's overflow count adds bit 31 and above."""
    path = Path(path)
    data = path.read_bytes()
    offset = _header_length(data, end_marker=b"#!END-HEADER")
    parts = {k: [] for k in EVENT_KEYS}
    while offset < len(data):
        if offset + _PACKET.size > len(data):
            raise DataError(f"event file {path} is truncated: a packet header is cut off at byte {offset}")
        e_type, _, e_size, _, overflow, capacity, _, _ = _PACKET.unpack_from(data, offset)
        offset += _PACKET.size
        length = capacity * e_size
        if length < 0 or offset + length > len(data):
            raise DataError(f"event file {path} is truncated: a packet of {length} bytes is cut off at byte {offset}")
        if e_type == 1:  # polarity events
            if e_size < 8:
                raise DataError(f"event file {path}: polarity events of {e_size} bytes (8 expected)")
            raw = np.frombuffer(data, dtype="<u4", count=length // 4, offset=offset).reshape(capacity, e_size // 4)
            word, t = raw[:, 0].astype(np.int64), raw[:, 1].astype(np.int64)
            parts["t"].append(t | (overflow << 31))
            parts["x"].append((word >> 17) & 0x7FFF)
            parts["y"].append((word >> 2) & 0x7FFF)
            parts["p"].append((word >> 1) & 1)
        offset += length
    return {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}


def save_npz(path: Path, **arrays) -> None:
    """``np.savez_compressed`` written atomically, so an interrupted conversion leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_events(path: Path, height: int, width: int) -> dict:
    """One sample of ``events_np``, checked: its four arrays, of one length, inside the sensor."""
    try:
        with np.load(path) as npz:
            missing = [k for k in EVENT_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"event file {path} lacks {', '.join(missing)} (it holds {', '.join(npz.files)})")
            events = {k: npz[k] for k in EVENT_KEYS}
    except DataError:
        raise
    except Exception as e:  # a damaged zip fails in many ways
        raise DataError(f"event file {path} cannot be read; it may be truncated ({type(e).__name__}: {e})") from None
    lengths = {k: v.shape for k, v in events.items()}
    if len({v.shape for v in events.values()}) != 1 or events["t"].ndim != 1:
        raise DataError(f"event file {path}: t, x, y, p must be 1-d arrays of one length, found {lengths}")
    if events["x"].size and (events["x"].max() >= width or events["y"].max() >= height
                             or events["x"].min() < 0 or events["y"].min() < 0):
        raise DataError(f"event file {path} has events outside the {height}x{width} sensor")
    return events


def frames_by_number(events: dict, frames: int, height: int, width: int) -> np.ndarray:
    """``[frames, 2, height, width]`` float64 event counts, the events split into ``frames`` slices of
    (nearly) equal number (SpikingJelly's ``split_by="number"``)."""
    n = events["t"].size
    per_slice = n // frames
    index = np.arange(n)
    # event e lies in slice e // per_slice, and the last slice takes the rest; with fewer events
    # than frames, every slice but the last is empty
    slices = np.minimum(index // per_slice, frames - 1) if per_slice else np.full(n, frames - 1)
    channel = (events["p"] != 0).astype(np.int64)
    pixel = events["y"].astype(np.int64) * width + events["x"].astype(np.int64)
    flat = (slices * 2 + channel) * (height * width) + pixel
    counts = np.bincount(flat, minlength=frames * 2 * height * width)
    return counts.astype(np.float64).reshape(frames, 2, height, width)


def stored_shape(path: Path, key: str) -> tuple:
    """The shape of array ``key`` in an .npz, read from its header alone (nothing else is decompressed)."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)
        return tuple(shape)
    except Exception as e:
        raise DataError(f"frames file {path} cannot be read; delete it to convert the sample again "
                        f"({type(e).__name__}: {e})") from None


def check_frames(path: Path, frames: int, height: int, width: int) -> None:
    shape = stored_shape(path, "frames")
    if shape != (frames, 2, height, width):
        raise DataError(f"frames file {path} holds frames {list(shape)}, not [{frames}, 2, {height}, {width}]: "
                        "it was cached for other settings; delete it to convert the sample again")


def load_frames(path: Path, frames: int, height: int, width: int) -> np.ndarray:
    """One cached sample of frames as float32, checked against the frames asked for."""
    try:
        with np.load(path) as npz:
            data = npz["frames"]
    except Exception as e:
        raise DataError(f"frames file {path} cannot be read; delete it to convert the sample again "
                        f"({type(e).__name__}: {e})") from None
    if data.shape != (frames, 2, height, width):
        raise DataError(f"frames file {path} holds frames {list(data.shape)}, not [{frames}, 2, {height}, {width}]: "
                        "it was cached for other settings; delete it to convert the sample again")
    return data.astype(np.float32)


def convert_all(jobs: Sequence[tuple[Callable, tuple]], what: str) -> None:
    """Run conversion jobs on a few threads (NumPy and zlib release the GIL); the first error is raised."""
    if not jobs:
        return
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        quiet = len(futures) < 50 or not sys.stderr.isatty()
        for future in tqdm(futures, desc=what, unit="file", disable=quiet, leave=False):
            future.result()


def extract_zips(download: Path, extract: Path) -> None:
    """The archives of ``download/`` unpacked into ``extract/`` (CIFAR10-DVS: one zip per class)."""
    archives = sorted(download.glob("*.zip"))
    if not archives:
        raise DataError(f"dataset not found: no events_np/, extract/ or zip archives in {download.parent}")
    for archive in archives:
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(extract)
        except zipfile.BadZipFile:
            raise DataError(f"archive {archive} is not a readable zip file; download it again") from None


def folder_classes(root: Path) -> list[str]:
    """Class folder names in torchvision's DatasetFolder order (sorted as strings: "10" before "2"),
    which SpikingJelly's datasets use, and with them the original's labels."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def folder_samples(root: Path, suffix: str = ".npz") -> tuple[list[Path], np.ndarray, list[str]]:
    """Files and labels of a class-folder tree in DatasetFolder's order: classes sorted, files sorted by name."""
    classes = folder_classes(root)
    files, labels = [], []
    for label, name in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(root / name, followlinks=True)):
            for fname in sorted(names):
                if fname.endswith(suffix):
                    files.append(Path(dirpath) / fname)
                    labels.append(label)
    return files, np.asarray(labels, dtype=np.int64), classes
