"""Where the MDS shards are and how samples become tensors."""

from __future__ import annotations

from pydantic import Field, model_validator

from trainer.config.base import Section


class AugmentConfig(Section):
    """The two-view pretraining transform of TCL (both views draw it independently)."""

    scale_min: float = Field(0.2, gt=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    """Horizontal flip probability (0 where captions say left and right)."""
    color_jitter: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    color_jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1)
    randaugment_n: int = Field(2, ge=0)
    randaugment_m: int = Field(7, ge=0, le=10)
    randaugment_p: float = Field(0.5, ge=0, le=1)


class DataConfig(Section):
    """MDS shard locations (a local folder or s3://bucket/prefix) and loader settings."""

    train: str = "data/train"
    """MDS location of the training split (local path or s3://)."""
    eval: str | None = None
    """MDS location of the held-out retrieval split; None disables evaluation."""
    cache_dir: str = "/tmp/tcl-mds-cache"
    """Local cache for remote shards (one sub-folder per split)."""
    cache_limit: str | None = None
    """Most disk the cache of a remote split may use, e.g. '100gb' (streaming evicts shards past it);
    None keeps every downloaded shard."""
    batch_size: int = Field(64, ge=1)
    """Per-rank micro-batch."""
    global_batch_size: int | None = Field(None, ge=1)
    """Samples per optimizer step over all ranks; None = batch_size x ranks (no accumulation). Else each
    rank accumulates global / (batch_size x ranks) micro-batches, which must be a whole number."""
    num_workers: int = Field(8, ge=0)
    prefetch_factor: int = Field(2, ge=1)
    max_words: int = Field(30, ge=1)
    """Caption cleaning keeps at most this many words."""
    max_tokens: int = Field(25, ge=2)
    """Tokenizer truncation for pretraining (30 for retrieval)."""
    eval_max_tokens: int = Field(30, ge=2)
    fixed_length: bool = False
    """Pad every caption to max_tokens (static shapes) instead of to the longest in the batch."""
    shuffle: bool = True
    num_canonical_nodes: int = Field(1, ge=1)
    """streaming's canonical node count: the data order is a function of it (and the seed, the split and
    the global batch), never of the physical node count, so 2 nodes x 1 rank train exactly what 1 node
    x 2 ranks do. Fixed for a run's life (a resume that would change it is refused). It must divide, or
    be a multiple of, the node count; 1 works with every count. Each node reads a 1/N share of the shards
    only when it is a multiple of the node count N: for large multi-node runs from object storage set it
    to a multiple of the largest node count you will run on (64 for up to 64 nodes, powers of two), with
    splits much larger than it (every canonical node's share is padded to the same size)."""
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _check_global_batch(self) -> DataConfig:
        # The world size is known only at launch (trainer.config.batch.resolve_batch); this holds for any.
        if self.global_batch_size is not None and self.global_batch_size % self.batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of batch_size {self.batch_size}"
            )
        return self
