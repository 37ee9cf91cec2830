"""Every "auto" of a run, decided in one place from its config and this machine.

A config may leave the device, the backward memory, channels-last, compilation, the fused optimizer
step and the loader workers to "auto". ``Runtime.resolve`` decides them all once per run, the run logs the decision in one line
(``Runtime.describe``), and the trainer, the loaders and the evaluation are given the result. The
rules themselves are the ``*_for`` functions below, each the only place its rule is written; the backward
memory's, ``backward_memory_for``, is the spike operations' own (``spike_ops``), since their layers resolve
"auto" themselves, and is imported here. This module sits above ``neurons`` and ``spike_ops``: it imports
from them, never they from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from .neurons import fused_available
from .spike_ops import backward_memory_for

if TYPE_CHECKING:
    from .config import Config
    from .engine.distributed import DistInfo

# timm optimizer names whose torch class has a fused kernel (timm passes ``fused=True`` on to it)
FUSED_OPTIMIZERS = ("adam", "adamw")
# modes that capture CUDA graphs on a GPU
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# auto loader workers: more than this adds start-up time and memory, not images per second
MAX_AUTO_WORKERS = 32

__all__ = ["CUDA_GRAPH_MODES", "FUSED_OPTIMIZERS", "MAX_AUTO_WORKERS", "Runtime", "available_cpus",
           "backward_memory_for", "channels_last_for", "compile_mode_for", "cpu_ids", "fused_optimizer_for",
           "workers_for"]


def channels_last_for(setting: Optional[bool], device_type: str) -> bool:
    """auto: channels-last on CUDA (cuDNN's fast layout); on CPU it measured slower."""
    return device_type == "cuda" if setting is None else setting


def compile_mode_for(setting: Optional[bool], mode: str, device_type: str, distributed: bool,
                     backward_memory: str) -> Optional[str]:
    """The torch.compile mode, or None for eager. auto compiles single-process CUDA runs only: on CPU
    compiling takes minutes for a small gain, CUDA graphs under DDP are not supported, and with
    ``backward_memory: min`` a compiled graph would choose for itself what backward keeps (min's
    recomputation is an eager one)."""
    if setting is None:
        wanted = device_type == "cuda" and not distributed and backward_memory != "min"
        return mode if wanted else None
    return mode if setting else None


def fused_optimizer_for(setting: Optional[bool], opt: str, device_type: str) -> bool:
    """auto: on CUDA with an optimizer that has a fused kernel. There a foreach step launches a dozen kernels
    per parameter group, a host cost that bounds a fast training loop; the fused step is one launch and
    gives the same update up to float rounding. On CPU the step is under 1 % of a training step, and the
    unfused step stays the reference the tests compare against."""
    if setting is None:
        return device_type == "cuda" and opt in FUSED_OPTIMIZERS
    return setting


def cpu_ids() -> list[int]:
    """The CPUs this process may run on: its affinity mask, which taskset, Slurm and the study's parallel
    runs narrow, or all of them."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this platform
        return list(range(os.cpu_count() or 1))


def available_cpus() -> int:
    return len(cpu_ids())


def workers_for(setting: Optional[int], device_type: str, cpus: Optional[int] = None,
                local_processes: Optional[int] = None) -> int:
    """Loader workers. auto: on a GPU every CPU core this process's share holds but one (the training
    loop's), as augmentation is what limits a fast GPU; on CPU one, since the model's compute needs the
    cores and a CPU step asks for few images. A number is used as given (the batches are the same with
    any number)."""
    if setting is not None:
        return setting
    cpus = available_cpus() if cpus is None else cpus
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if local_processes is None else local_processes
    share = max(1, cpus // max(1, local))
    if device_type == "cuda":
        return max(1, min(share - 1, MAX_AUTO_WORKERS))
    return 1 if share > 1 else 0


@dataclass(frozen=True)
class Runtime:
    """How this run is carried out on this machine: what each "auto" of its config came to."""

    device: torch.device
    backward_memory: str  # min, lean or full
    channels_last: bool
    compile_mode: Optional[str]  # None: eager
    cuda_graphs: bool  # the compiled steps run as CUDA graphs
    workers: int
    fused_kernels: bool  # the fused neuron kernels can run here
    fused_optimizer: bool = False  # the optimizer step as one fused kernel
    processes: int = 1

    @classmethod
    def resolve(cls, cfg: "Config", device: torch.device, dist: Optional["DistInfo"] = None) -> "Runtime":
        distributed = dist is not None and dist.enabled
        memory = backward_memory_for(cfg.backward_memory, device.type)
        compile_mode = compile_mode_for(cfg.compile, cfg.compile_mode, device.type, distributed, cfg.backward_memory)
        return cls(device=device, backward_memory=memory, channels_last=channels_last_for(cfg.channels_last, device.type),
                   compile_mode=compile_mode,
                   cuda_graphs=device.type == "cuda" and compile_mode in CUDA_GRAPH_MODES,
                   workers=workers_for(cfg.workers, device.type),
                   fused_kernels=fused_available(torch.zeros(1, device=device)),
                   fused_optimizer=fused_optimizer_for(cfg.fused_optimizer, cfg.opt, device.type),
                   processes=dist.world if distributed else 1)

    def describe(self, cfg: "Config") -> str:
        """The run's decisions in one line, each marked "auto" where the config left it to us."""
        def auto(given) -> str:
            return " (auto)" if given is None or given == "auto" else ""

        compiled = ("eager" if self.compile_mode is None else
                    f"torch.compile {self.compile_mode}{' with CUDA graphs' if self.cuda_graphs else ''}")
        workers = f"{self.workers} loader workers" + (f" (auto, {available_cpus()} CPUs)" if cfg.workers is None else "")
        processes = f" x {self.processes} processes" if self.processes > 1 else ""
        return (f"runtime: {self.device}{auto(cfg.device)}{processes} | backward memory {self.backward_memory}"
                f"{auto(cfg.backward_memory)} | channels-last {'on' if self.channels_last else 'off'}"
                f"{auto(cfg.channels_last)} | {compiled}{auto(cfg.compile)} | {workers} | fused neuron kernels "
                f"{'usable' if self.fused_kernels else 'not usable here'} | {cfg.opt} "
                f"{'fused' if self.fused_optimizer else 'unfused'}{auto(cfg.fused_optimizer)} | amp {cfg.amp}")
