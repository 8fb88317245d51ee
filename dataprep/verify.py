"""Re-check a finished dataset against its manifest (`dataprep verify`): every shard's size and sha256."""

from __future__ import annotations

import hashlib
import logging

from pydantic import BaseModel

from dataprep.reader import load_index, load_manifest, stored_basename
from dataprep.storage import open_store

logger = logging.getLogger(__name__)


class VerifyReport(BaseModel):
    location: str
    shards_checked: int
    bytes_checked: int
    problems: list[str]
    """One line per mismatch; empty when the dataset is intact."""

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_dataset(location: str) -> VerifyReport:
    """Compare index.json with the manifest, then hash every shard file as it lies in storage."""
    dataset = open_store(location)
    manifest = load_manifest(dataset)
    problems: list[str] = []
    indexed = [(stored_basename(shard), shard["samples"]) for shard in load_index(dataset)]
    listed = [(shard.basename, shard.samples) for shard in manifest.shards]
    if indexed != listed:
        problems.append(f"index.json lists {len(indexed)} shards that differ from the manifest's {len(listed)}")
    checked_bytes = 0
    for shard in manifest.shards:
        try:
            data = dataset.read_bytes(shard.basename)
        except FileNotFoundError:
            problems.append(f"{shard.basename}: missing")
            continue
        checked_bytes += len(data)
        if len(data) != shard.bytes:
            problems.append(f"{shard.basename}: {len(data)} bytes, the manifest says {shard.bytes}")
        elif hashlib.sha256(data).hexdigest() != shard.sha256:
            problems.append(f"{shard.basename}: sha256 mismatch (the file changed after it was written)")
        logger.debug("checked %s", shard.basename)
    return VerifyReport(
        location=dataset.uri, shards_checked=len(manifest.shards), bytes_checked=checked_bytes, problems=problems
    )
