"""The run's other outputs (metrics.jsonl, config.yaml, metrics.png) follow its checkpoints: copied to
the run's storage at every checkpoint and at the end, and cut back to the resumed step on a resume, so
that metrics.jsonl never holds a step twice."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from trainer.checkpoint.layout import write_durably
from trainer.checkpoint.storage import Storage

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
OUTPUTS = (METRICS, "config.yaml", "metrics.png")


def sync_outputs(run_dir: Path, store: Storage) -> None:
    """Put every output that exists in run_dir into the store (on a filesystem: make it durable)."""
    for name in OUTPUTS:
        if (run_dir / name).is_file():
            store.put(run_dir / name, name)


def restore_outputs(run_dir: Path, store: Storage, step: int) -> None:
    """Bring metrics.jsonl back from the store when this node has none (object storage on a new node)
    and drop its records past `step`: the resumed run logs those steps again."""
    path = run_dir / METRICS
    if not path.is_file() and METRICS in store.list(METRICS):
        store.get(METRICS, path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _step(line) is not None and _step(line) <= step]
    if len(kept) != len(lines):
        logger.info("%s: dropped %d records past the resumed step %d", path, len(lines) - len(kept), step)
        write_durably(path, "".join(f"{line}\n" for line in kept))


def _step(line: str) -> int | None:
    """A record's step; None for a line a crash cut short (it is dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
