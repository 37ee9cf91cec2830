"""What the event-camera datasets share: frames cached in SpikingJelly's layout, served with the
original's transforms (a resize to ``img_size`` with antialiasing, and a random horizontal flip).

A dataset's frames are prepared before training starts (converted from
``events_np/``, which is converted from the raw files first where it is
missing), so a run never stops mid-epoch over a file it could have checked.
A sample is ``[T, 2, H, W]`` float32 counts; the loader stacks them into the
model's 5-D input ``[B, T, 2, H, W]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from .events import check_frames, convert_all, frames_by_number, load_events, load_frames, save_npz
from .loaders import SeededDataset
from .registry import DatasetDef

if TYPE_CHECKING:
    from ..config import Config


class FramesTransform:
    """Resize to ``size`` (torchvision's antialiased bilinear resize of the frames tensor, as the original's
    ``transforms.Resize``), then flip horizontally with probability ``hflip``."""

    def __init__(self, size: int, hflip: float = 0.0):
        self.size, self.hflip = size, hflip

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[-2:] != (self.size, self.size):
            from torchvision.transforms.functional import resize

            frames = resize(frames, [self.size, self.size], antialias=True)
        if self.hflip and torch.rand(()) < self.hflip:
            frames = frames.flip(-1)
        return frames


class EventFramesDataset(SeededDataset):
    kind = "frames"

    def __init__(self, files: Sequence[Path], labels: np.ndarray, frames: int, sensor: tuple[int, int],
                 transform: Optional[FramesTransform] = None, seed: int = 0):
        super().__init__(transform, seed)
        self.files, self.labels, self.frames, self.sensor = list(files), labels, frames, sensor

    def _sample(self, i: int):
        frames = torch.from_numpy(load_frames(self.files[i], self.frames, *self.sensor))
        if self.transform is not None:
            frames = self.transform(frames)
        return frames, int(self.labels[i])

    def subset(self, indices: np.ndarray, transform: Optional[FramesTransform] = None) -> "EventFramesDataset":
        return EventFramesDataset([self.files[i] for i in indices], self.labels[indices], self.frames, self.sensor,
                                  transform, self.seed)


def frames_folder(root: Path, frames: int) -> Path:
    return root / f"frames_number_{frames}_split_by_number"


def cache_frames(events_files: Sequence[Path], events_root: Path, frames_root: Path, frames: int,
                 sensor: tuple[int, int]) -> list[Path]:
    """The frames file of each events file (the same relative path under ``frames_root``), converting
    those not cached yet."""
    targets = [frames_root / f.relative_to(events_root) for f in events_files]
    height, width = sensor

    def convert(source: Path, target: Path) -> None:
        save_npz(target, frames=frames_by_number(load_events(source, height, width), frames, height, width))

    cached = [t for t in targets if t.exists()]
    convert_all([(convert, (s, t)) for s, t in zip(events_files, targets) if not t.exists()],
                f"frames ({frames} per sample)")
    for target in cached:  # a file cached for other settings is found now, not in the middle of an epoch
        check_frames(target, frames, height, width)
    return targets


class EventDatasetDef(DatasetDef):
    """An event-camera dataset in SpikingJelly's layout; subclasses say how the raw files become ``events_np``."""

    frames = True
    in_chans = 2
    sensor: ClassVar[tuple[int, int]] = (128, 128)
    mean, std = (0.0, 0.0), (1.0, 1.0)  # event counts are used as they are

    def check_config(self, cfg: "Config") -> None:
        super().check_config(cfg)
        if cfg.aa:
            raise DataError(f"{self.name} samples are event frames: RandAugment (aa) does not apply to them; set aa: none")
        if list(cfg.scale) != [1.0, 1.0]:
            raise DataError(f"{self.name} samples are event frames, resized whole: a random crop (scale) does not "
                            "apply to them; set scale: [1.0, 1.0]")

    def transforms(self, cfg: "Config") -> tuple[FramesTransform, FramesTransform]:
        return FramesTransform(cfg.img_size, cfg.hflip), FramesTransform(cfg.eval_img_size or cfg.img_size)
