"""Process-level set-up that mosaicml-streaming needs in a multi-rank job: the environment it reads,
and removal of the shared memory a crashed run left behind."""

from __future__ import annotations

import logging
import os
import re

import torch.distributed as dist
from streaming.base import distributed as streaming_dist
from streaming.base.constant import SHM_TO_CLEAN

from trainer.shared_memory import remove_unmapped

logger = logging.getLogger(__name__)

STREAMING_SEGMENT = re.compile(r"\d{6}_(?:" + "|".join(map(re.escape, SHM_TO_CLEAN)) + ")")
"""streaming names its segments '<6-digit prefix>_<name>'."""


def prepare_streaming_env() -> None:
    """Call once per process at start-up, after torch.distributed is initialised, before any loader.

    The deepspeed launcher sets LOCAL_SIZE, not the LOCAL_WORLD_SIZE streaming reads (without it
    every rank acts as its node's leader and they race on shared memory). Segments left by a crashed
    run are removed on local rank 0 while the other ranks wait. Tokenizer threads are turned off:
    the loader forks workers, and its batches are small.
    """
    if "LOCAL_SIZE" in os.environ:  # set by the launcher for this very process: it wins over an inherited value
        os.environ["LOCAL_WORLD_SIZE"] = os.environ["LOCAL_SIZE"]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if streaming_dist.get_local_rank() == 0:
        removed = remove_stale_shared_memory()
        if removed:
            logger.warning("removed %d streaming shared-memory segments left by a crashed run", len(removed))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def remove_stale_shared_memory() -> list[str]:
    """Unlink the streaming segments in /dev/shm that no live process maps, and return their names.

    A crashed run leaves its segments behind; a dataset whose remote cache dir is still registered
    there then fails with "Reused local directory". streaming's own clean_stale_shared_memory()
    stops at the first unused prefix (prefixes with leftover file locks in /tmp are skipped, so
    later ones stay) and also unlinks the segments of runs that are alive; "mapped by no process"
    tells the stale ones apart. It errs on the safe side: streaming keeps every segment it ever
    attached mapped until its process exits, so a stale segment that another live streaming process
    scanned is kept (it then only costs a prefix, unless that run shares our cache directory).
    """
    return remove_unmapped(STREAMING_SEGMENT)


def check_world(rank: int, world_size: int) -> None:
    """streaming partitions by RANK / WORLD_SIZE / LOCAL_WORLD_SIZE from the environment: they must
    describe the same process as the caller's rank and world size."""
    seen = (streaming_dist.get_rank(), streaming_dist.get_world_size())
    if seen != (rank, world_size):
        raise ValueError(
            f"loader built for rank {rank} of {world_size}, but the environment says RANK={seen[0]}"
            f" WORLD_SIZE={seen[1]} (launch with deepspeed or torchrun, or set both variables)"
        )
    if world_size > 1 and "LOCAL_WORLD_SIZE" not in os.environ:
        raise ValueError("LOCAL_WORLD_SIZE is not set: call prepare_streaming_env() at start-up")
