"""MDS datasets written in chunk sub-folders, joined by streaming's merge_index, sealed by a manifest.

`MDSWriter` cannot append, so a dataset is a sequence of chunk sub-folders (`chunk-00000/` ...), each
written in one go by its own MDSWriter; shards go to the local folder or are uploaded to S3 as each
one fills. A chunk counts as done only once its `ChunkReport` is saved, after every shard is stored.
`finalize_dataset` merges the chunk indexes into the dataset's `index.json` and writes the manifest
last, so a folder without `manifest.json` is never a finished dataset.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from streaming import MDSWriter
from streaming.base.compression import get_compressions, is_compression
from streaming.base.util import merge_index

from dataprep.records import Reject
from dataprep.schema import COLUMNS, INDEX_NAME, MANIFEST_NAME, REJECTS_NAME, Manifest, ShardInfo
from dataprep.storage import Store, is_remote

logger = logging.getLogger(__name__)

_HASH = "sha256"
_UPLOAD_ATTEMPTS = 5


class ShardOptions(BaseModel):
    """How rows are packed into MDS shard files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size_limit: int = Field(64 << 20, ge=1 << 16, lt=1 << 32)
    """Bytes of rows per shard before a new shard starts (MDS offsets are 32-bit)."""
    compression: str | None = None
    """MDS shard compression ('zstd', 'zstd:7', 'gz', ...); JPEG bytes hardly compress, so none by default."""

    @field_validator("compression")
    @classmethod
    def _known_compression(cls, value: str | None) -> str | None:
        if value is not None and not is_compression(value):
            raise ValueError(f"unknown compression {value!r}; one of {sorted(get_compressions())}")
        return value


class ChunkReport(BaseModel):
    """What one chunk sub-folder holds; saving it is what marks the chunk done."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    shards: list[ShardInfo]
    accepted_by_source: dict[str, int]
    rejects: list[Reject]
    digests: dict[str, str]
    """Duplicate-detection digest -> sample id of every row, so a resumed run still finds duplicates."""

    @property
    def samples(self) -> int:
        return sum(shard.samples for shard in self.shards)


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}"


def _shard_info(chunk: str, shard: dict[str, Any]) -> ShardInfo:
    stored = shard["zip_data"] or shard["raw_data"]  # the file as it lies in storage
    return ShardInfo(
        basename=f"{chunk}/{stored['basename']}", sha256=stored["hashes"][_HASH],
        bytes=stored["bytes"], samples=shard["samples"],
    )


class ChunkWriter:
    """Writes the rows of one chunk sub-folder of a dataset, clearing what an interrupted attempt left there."""

    def __init__(self, dataset: Store, name: str, options: ShardOptions) -> None:
        self.name = name
        dataset.delete_tree(name)
        self._staging = tempfile.mkdtemp(prefix=f"dataprep-{name}-") if is_remote(dataset.uri) else None
        out = (self._staging, dataset.url(name)) if self._staging else dataset.url(name)
        self._writer = MDSWriter(
            out=out, columns=COLUMNS, compression=options.compression, hashes=[_HASH],
            size_limit=options.size_limit, exist_ok=True, retry=_UPLOAD_ATTEMPTS,
        )
        self._by_source: Counter[str] = Counter()
        self._rejects: list[Reject] = []
        self._digests: dict[str, str] = {}

    def write(self, row: dict[str, Any], digest: str | None = None) -> None:
        """Add a row (with COLUMNS' keys); digest, if given, is kept for duplicate detection on resume."""
        self._writer.write(row)
        self._by_source[row["source"]] += 1
        if digest is not None:
            self._digests[digest] = row["sample_id"]

    def reject(self, reject: Reject) -> None:
        self._rejects.append(reject)

    def finish(self) -> ChunkReport:
        """Flush the last shard, wait for every upload, and describe the chunk."""
        self._writer.finish()
        self._remove_staging()
        return ChunkReport(
            name=self.name, shards=[_shard_info(self.name, s) for s in self._writer.shards],
            accepted_by_source=dict(self._by_source), rejects=self._rejects, digests=self._digests,
        )

    def abort(self) -> None:
        """Stop without finishing: the sub-folder stays incomplete and is rewritten on resume."""
        self._writer.cancel_future_jobs()
        self._remove_staging()

    def _remove_staging(self) -> None:
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)


def finalize_dataset(dataset: Store, chunks: list[ChunkReport], job: str) -> Manifest:
    """Join the chunks into one dataset: merged index.json, reject report, then the manifest (last)."""
    remote = is_remote(dataset.uri)
    # For a local folder, merge_index's keep_local=False would delete the dataset itself.
    merge_index([dataset.url(f"{c.name}/{INDEX_NAME}") for c in chunks], dataset.uri, keep_local=not remote)
    rejects = [reject for chunk in chunks for reject in chunk.rejects]
    dataset.write_text(REJECTS_NAME, "".join(r.model_dump_json() + "\n" for r in rejects))
    by_source: Counter[str] = Counter()
    for chunk in chunks:
        by_source.update(chunk.accepted_by_source)
    manifest = Manifest(
        samples=sum(c.samples for c in chunks), shards=[s for c in chunks for s in c.shards],
        accepted_by_source=dict(sorted(by_source.items())),
        rejected=dict(sorted(Counter(str(r.reason) for r in rejects).items())), job=job,
    )
    dataset.write_text(MANIFEST_NAME, manifest.model_dump_json(indent=2))
    logger.info("%s: %d samples in %d shards", dataset.uri, manifest.samples, len(manifest.shards))
    return manifest


def write_dataset(dataset: Store, rows: Iterable[dict[str, Any]], options: ShardOptions, job: str) -> Manifest:
    """Write a whole dataset from rows in one chunk (for generated data that needs no resume)."""
    writer = ChunkWriter(dataset, chunk_name(0), options)
    try:
        for row in rows:
            writer.write(row)
    except BaseException:
        writer.abort()
        raise
    return finalize_dataset(dataset, [writer.finish()], job)
