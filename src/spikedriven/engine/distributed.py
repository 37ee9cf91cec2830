"""Process-group helpers for ``torchrun`` data-parallel runs (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is available; use --device cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def slurm_environment(env=os.environ) -> dict:
    """torchrun's variables for the tasks of ``srun -n N spikedriven train`` (N > 1), from Slurm's own.

    Without them each of the N tasks would train alone into the same folder. Slurm names the rank of
    a task (SLURM_PROCID), their number (SLURM_NTASKS) and the rank on its node (SLURM_LOCALID); where
    the rendezvous is (MASTER_ADDR, MASTER_PORT) must be given, as torchrun's users give it."""
    tasks = int(env.get("SLURM_NTASKS", "1") or 1)
    if "WORLD_SIZE" in env or tasks <= 1 or "SLURM_PROCID" not in env:
        return {}
    if not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise ConfigError(f"srun started {tasks} tasks of one run, but MASTER_ADDR and MASTER_PORT are not set; "
                          "export them (the first node's host name and a free port) to train one run over the tasks, "
                          "or start one task per node that runs torchrun")
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(tasks), "LOCAL_RANK": env.get("SLURM_LOCALID", "0")}


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1) or as one of several srun tasks."""
    os.environ.update(slurm_environment())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank), device


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
