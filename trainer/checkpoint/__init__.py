"""Resumable checkpoints: DeepSpeed's (online weights, optimizer, schedule) plus everything else.

Layout under <output_dir>/checkpoints/:
  step_00000100/            DeepSpeed's files; client state = step, epoch, loader state, fp32 momentum
                            encoder, queues + pointer, config
  step_00000100/rng_rank{r}.pt   per-rank RNG states (DeepSpeed saves client state from rank 0 only)
  latest                    the newest COMPLETE tag, written by rank 0 after a barrier, atomically
DeepSpeed's own `latest` is written early by rank 0 (before the other ranks finish), so it is disabled.

Modules: `layout` (tags and the pointer), `rng` (per-rank RNG state), `checkpointer` (save, find, load).
"""

from trainer.checkpoint.checkpointer import Checkpointer
from trainer.checkpoint.layout import POINTER, tag_for

__all__ = ["POINTER", "Checkpointer", "tag_for"]
