"""One gloo rank of test_feature_queue's two-rank check (run as a script, env:// rendezvous on loopback).

Enqueues rank-specific momentum features into queues of several sizes and saves every step's queue
state to OUT_DIR/rank{R}.pt for the test to compare across ranks and with a slow reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from trainer.model import FeatureQueue

SEED, DIM, BATCH, STEPS = 11, 8, 4, 5
SIZES = (16, 10, 6)
"""16: 2 x 4 divides it; 10: it does not (wrap-around mid-step); 6: one step's 8 entries exceed the queue."""


def rank_features(rank: int, step: int) -> tuple[Tensor, Tensor]:
    """The (image, text) momentum features rank `rank` enqueues at `step`."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    return (F.normalize(torch.randn(BATCH, DIM, generator=g), dim=1),
            F.normalize(torch.randn(BATCH, DIM, generator=g), dim=1))


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    history: dict[int, list[dict[str, Tensor]]] = {}
    for size in SIZES:
        queues = FeatureQueue(size, DIM, seed=SEED)
        states = [{k: v.clone() for k, v in queues.state_dict().items()}]
        for step in range(STEPS):
            queues.enqueue(*rank_features(rank, step))
            states.append({k: v.clone() for k, v in queues.state_dict().items()})
        history[size] = states
    torch.save(history, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
