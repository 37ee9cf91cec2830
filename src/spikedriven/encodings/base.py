"""What an input encoding is: a named step that turns a normalised image batch ``[B, C, H, W]`` into the frames
``[B, T, C, H, W]`` the model reads (or leaves it 4-D, for the model to repeat), with typed settings.

Random encodings draw their uniforms from a counter-based hash of (run seed, epoch, sample index, element), computed
with integer tensor operations on the batch's device: no generator state is read or advanced, so the draws of a
sample are the same on a CPU and a GPU, with any number of loader workers, at any batch size and after a resume.
The loaders give each sample its key ``(epoch, index)`` (``data.batches.DeviceBatches``); a batch that comes
without keys (a caller's own tensors) keys each sample by a hash of its own pixels instead.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Sequence

import torch

from ..errors import ConfigError, did_you_mean
from ..neurons.spec import Param

__all__ = ["EVAL_EPOCH", "Encoding", "hashed_uniforms"]

# The epoch key of every evaluation: an evaluation draws the same spikes whenever and wherever it runs.
EVAL_EPOCH = -1

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # the counter's stride: consecutive elements land far apart before mixing


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for 32-bit ``x``, in halves so that no int64 product overflows (wrapping is not promised)."""
    high, low = c >> 16, c & 0xFFFF
    return ((((x * high) & 0xFFFF) << 16) + x * low) & _MASK


def _mix(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability about 1/2."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _fold(h: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``h`` with a 64-bit integer folded in, both halves of it (a negative epoch key included)."""
    h = _mix(h ^ (value & _MASK))
    return _mix(h ^ ((value >> 32) & _MASK))


def sample_hashes(seed: int, keys: torch.Tensor) -> torch.Tensor:
    """One 32-bit hash per sample from the run's seed and its key ``[B, 2]`` (epoch, index), as int64 ``[B]``."""
    h = _fold(torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device),
              torch.full_like(keys[:, 0], seed))
    return _fold(_fold(h, keys[:, 0]), keys[:, 1])


def content_keys(images: torch.Tensor, epoch: int) -> torch.Tensor:
    """Keys ``[B, 2]`` for samples that came without one: (epoch, a hash of the sample's own float32 values)."""
    bits = images.detach().float().contiguous().view(torch.int32).flatten(1).long() & _MASK
    positions = _mul32(torch.arange(bits.shape[1], device=images.device), _GOLDEN)
    digest = _mix((bits + positions) & _MASK).sum(dim=1) & _MASK  # order-aware, exact in int64
    return torch.stack([torch.full_like(digest, epoch), digest], dim=1)


def hashed_uniforms(seed: int, keys: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Uniforms in [0, 1) of ``shape`` ``[B, ...]``: element e of sample b from (seed, keys[b], e) alone, in
    multiples of 2**-24 (exact in float32)."""
    per_sample = sample_hashes(seed, keys).view(-1, *([1] * (len(shape) - 1)))
    count = 1
    for size in shape[1:]:
        count *= size
    elements = torch.arange(count, dtype=torch.int64, device=keys.device).view(1, *shape[1:])
    x = _mix((per_sample + _mul32(elements, _GOLDEN)) & _MASK)
    return (x >> 8).float() * 2.0**-24


class Encoding:
    """An input encoding, bound to a run: its settings, T, the dataset's normalisation and the seed.

    A subclass sets ``name`` (an identifier: the config's ``encoding``), ``title``, ``params`` (its settings,
    ``Param`` each), ``binary`` (its frames hold 0 and 1 only: the operation counter then counts the first layer's
    accumulates) and ``random`` (it draws per sample: the loaders then key each sample), and defines ``encode``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    binary: ClassVar[bool] = False
    random: ClassVar[bool] = False

    def __init__(self, settings: Optional[Mapping[str, Any]] = None, *, time_steps: int = 1,
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), seed: int = 0):
        self.settings = self.resolve(settings or {})
        for key, value in self.settings.items():
            setattr(self, key, value)
        self.time_steps, self.seed = time_steps, seed
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)

    @classmethod
    def resolve(cls, given: Mapping[str, Any]) -> dict:
        """All settings: ``given`` (checked) over the defaults; one sentence for a bad one."""
        unknown = [k for k in given if k not in cls.params]
        if unknown:
            raise ConfigError(f"encoding {cls.name!r} takes no setting {', '.join(unknown)}"
                              f"{did_you_mean(unknown[0], cls.params)}; its settings are "
                              f"{', '.join(cls.params) or 'none'} (spikedriven encodings lists every encoding's)")
        values = {}
        for key, param in cls.params.items():
            try:
                values[key] = param.coerce(given.get(key, param.default))
            except ValueError as e:
                raise ConfigError(f"encoding {cls.name!r}: {key} {e}, got {given.get(key)!r}") from None
        for key, param in cls.params.items():
            problem = param.check(values[key], values) if param.check and values[key] is not None else None
            if problem:
                raise ConfigError(f"encoding {cls.name!r}: {key} {problem}, got {values[key]!r}")
        return values

    def __call__(self, images: torch.Tensor, keys: Optional[torch.Tensor] = None,
                 epoch: int = EVAL_EPOCH) -> torch.Tensor:
        """``images`` ``[B, C, H, W]`` (normalised) as the model's input. ``keys``: each sample's (epoch, index)
        ``[B, 2]``; None keys each sample by its pixels and ``epoch``."""
        if images.dim() != 4:
            raise ValueError(f"encoding {self.name!r} takes images [B, C, H, W], got shape {tuple(images.shape)}")
        uniforms = None
        if self.random:
            keys = content_keys(images, epoch) if keys is None else keys.to(images.device)
            shape = (images.shape[0], self.time_steps, *images.shape[1:])
            uniforms = hashed_uniforms(self.seed, keys, shape)
        return self.encode(images, uniforms)

    def encode(self, images: torch.Tensor, uniforms: Optional[torch.Tensor]) -> torch.Tensor:
        """The frames of ``images``; ``uniforms`` ``[B, T, C, H, W]`` for a random encoding, else None."""
        raise NotImplementedError

    def intensity(self, images: torch.Tensor) -> torch.Tensor:
        """The pixel intensity in [0, 1]: the normalisation undone (``x * std + mean``), clamped."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() * std + mean).clamp_(0.0, 1.0)

    def describe(self) -> str:
        settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.settings.items())
        return self.name + (f" ({settings})" if settings else "")
