"""Resumable checkpoints on every storage layout: DeepSpeed's state (online weights, optimizer, schedule)
plus the client state (step, epoch, loader position, fp32 momentum encoder, queues, config).

On-disk layout under <output_dir>/checkpoints/ (for s3:// output, the same keys under the bucket prefix,
written first into a node-local staging folder):
  step_00000100/                          one folder per checkpoint (tag = step, 8+ digits)
    mp_rank_00_model_states.pt            DeepSpeed: weights, LR schedule, client state (rank 0 writes
                                          it; on node-local disks, each node's first rank)
    [bf16_]zero_pp_rank_{r}_mp_rank_00_optim_states.pt   DeepSpeed: rank r's ZeRO optimizer partition
    rng_rank{r}.pt                        rank r's RNG states (plain tensors: weights_only=True)
    rank_{r}.json                         rank r's manifest: its files and their sizes, the world size,
                                          the batch sizes; written last, so it marks rank r's part complete
    universal/                            the tag converted for another world size (elastic resume)
  latest                                  the newest complete tag, written after every rank's part is
                                          confirmed, atomically and fsynced (a hint: a missing, empty or
                                          torn pointer falls back to the newest complete checkpoint)
A checkpoint is complete when every rank that saved it has its manifest there and every listed file has
the listed size. DeepSpeed's own `latest` is written before the other ranks finish, so it is disabled.

Modules: `layout` (names, manifests, the pointer, fsync), `storage` (filesystem or S3 behind put / get /
list / delete), `rng` (per-rank RNG state), `elastic` (universal conversion), `outputs` (metrics.jsonl
and the other run outputs), `checkpointer` (save, agree on a tag, load).

Trust: DeepSpeed's loader unpickles its own files (`torch.load(weights_only=False)`): a checkpoint is
trusted input, like code. The project's own files load as JSON or with `weights_only=True`.
"""

from trainer.checkpoint.checkpointer import Checkpointer, CheckpointError, ResumePlan, SavedCheckpoint
from trainer.checkpoint.layout import POINTER, tag_for

__all__ = ["POINTER", "CheckpointError", "Checkpointer", "ResumePlan", "SavedCheckpoint", "tag_for"]
