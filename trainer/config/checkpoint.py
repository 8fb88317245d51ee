"""Checkpoint cadence and retention."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainer.config.base import Section


class CheckpointConfig(Section):
    every_steps: int = Field(1000, ge=1)
    """Save every N optimizer steps (and always at the end)."""
    keep_last: int = Field(3, ge=1)
    """Complete checkpoints kept; older ones are deleted after a new one is complete."""
    storage: Literal["auto", "shared", "node_local"] = "auto"
    """Where each rank's checkpoint files live. auto: object storage when output_dir is s3://bucket/prefix
    (any endpoint: S3_ENDPOINT_URL), else a filesystem every node shares, checked at start-up (a run whose
    output_dir is not shared is refused); shared: the same for a filesystem, s3:// refused; node_local:
    each node keeps its own ranks' files in output_dir on its own disk (DeepSpeed's use_node_local_storage)."""
    staging_dir: str | None = None
    """Node-local folder where ranks write before uploading to s3:// output (None: a folder under the system
    temp dir named after output_dir). Unused for filesystem output."""
    load_universal: bool = False
    """Load the resumed checkpoint in DeepSpeed's universal format. Set by the trainer itself on an elastic
    resume (the saved data-parallel size differs from the current one), after converting the checkpoint."""


class EvalConfig(Section):
    every_steps: int = Field(5000, ge=1)
    """Zero-shot retrieval every N steps (and always at the end) when data.eval is set."""
    k_test: int = Field(256, ge=1)
    """ITC candidates re-ranked by the ITM head per query."""
    batch_size: int = Field(128, ge=1)
    image_size: int | None = Field(None, ge=16)
    """Resolution of the retrieval evaluation (the paper's zero-shot protocol: 384), position embeddings
    interpolated as the official code does; None = the training resolution model.vision.img_size."""


class LogConfig(Section):
    every_steps: int = Field(50, ge=1)
    progress_bar: bool = True
    """Show a progress bar on rank 0 when stdout is a terminal."""
    peak_flops: float = Field(989e12, gt=0)
    """One accelerator's peak FLOP/s for MFU (default: H100 SXM dense bf16); MFU is reported on GPUs only."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve per-rank Prometheus metrics on port + local rank; None disables it."""
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = []
    """Experiment trackers rank 0 sends every metrics.jsonl record to (trainer/tracking.py): tensorboard
    writes output_dir/tensorboard; mlflow logs to mlflow_uri; wandb to the project `experiment`
    (WANDB_MODE=offline, WANDB_API_KEY... as W&B reads them). Each needs the extra of its name."""
    mlflow_uri: str | None = None
    """MLflow tracking server (http://host:5000) or store URI; None: MLFLOW_TRACKING_URI, else MLflow's default."""
    experiment: str | None = Field(None, min_length=1)
    """MLflow experiment and W&B project; None: the run's `name`."""
    sample_ids: bool = False
    """Write, per step, the sample ids each rank trained on to output_dir/sample_ids/rank{r}.jsonl
    (one `{"step", "epoch", "ids"}` line per step): the audit that a resumed run trains every sample once."""
