"""Save on every rank, count a checkpoint only when all ranks have written it, find and load the newest."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoint.layout import POINTER, tag_for
from trainer.checkpoint.rng import rng_state, set_rng_state
from trainer.distributed import DistInfo, barrier

logger = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, root: str | Path, keep_last: int, dist: DistInfo) -> None:
        self.root = Path(root)
        self.keep_last = keep_last
        self.dist = dist

    def save(self, engine: Any, step: int, client_state: dict[str, Any]) -> Path:
        """Save on every rank; the checkpoint counts (pointer updated, old ones pruned) only after all
        ranks have written theirs."""
        tag = tag_for(step)
        engine.save_checkpoint(str(self.root), tag=tag, client_state=client_state, save_latest=False)
        torch.save(rng_state(), self.root / tag / f"rng_rank{self.dist.rank}.pt")
        barrier()
        if self.dist.is_main:
            tmp = self.root / f".{POINTER}.tmp"
            tmp.write_text(tag)
            os.replace(tmp, self.root / POINTER)
            self._prune(keep=tag)
        barrier()
        logger.info("checkpoint %s complete", self.root / tag)
        return self.root / tag

    def _prune(self, keep: str) -> None:
        complete = sorted(p for p in self.root.glob("step_*") if p.is_dir() and p.name <= keep)
        for old in complete[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> str | None:
        """The newest complete tag, or None when there is none."""
        pointer = self.root / POINTER
        if not pointer.is_file():
            return None
        tag = pointer.read_text().strip()
        return tag if (self.root / tag).is_dir() else None

    def load(self, engine: Any, tag: str) -> dict[str, Any]:
        """Restore engine state and this rank's RNG; return the client state."""
        path, client_state = engine.load_checkpoint(
            str(self.root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise FileNotFoundError(f"checkpoint {self.root / tag} could not be loaded")
        rng_file = self.root / tag / f"rng_rank{self.dist.rank}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=False))
        logger.info("resumed from %s", self.root / tag)
        return client_state
