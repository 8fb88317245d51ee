"""Process-group setup and the rank/device facts every component takes explicitly."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(local_rank: int | None = None, timeout_minutes: int = 30) -> DistInfo:
    """Initialise DeepSpeed's process group from the launcher's environment (deepspeed, torchrun or a
    plain process with RANK/WORLD_SIZE/MASTER_* set; a single process needs none of them): NCCL on GPUs,
    gloo on CPU, chosen by DeepSpeed's accelerator."""
    import deepspeed

    env = os.environ
    if "RANK" not in env:  # a plain `python trainer/main.py`: a world of one
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", "29500")
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK=str(local_rank or 0))
    local_rank = int(env.get("LOCAL_RANK", local_rank or 0))
    deepspeed.init_distributed(timeout=datetime.timedelta(minutes=timeout_minutes))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(
        rank=torch.distributed.get_rank(),
        local_rank=local_rank,
        world_size=torch.distributed.get_world_size(),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", env.get("LOCAL_SIZE", env["WORLD_SIZE"]))),
        device=device,
    )


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is set on any rank (one tiny all-reduce), so that every rank takes the same branch."""
    if not torch.distributed.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())
