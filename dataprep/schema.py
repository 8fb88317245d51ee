"""The MDS column layout and the dataset manifest: dataprep writes them, the trainer reads them. Torch-free.

One row per image. `caption` holds what the source record has: a string, or a list of strings
(retrieval splits group all of an image's captions in one row; the trainer draws one per visit).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

COLUMNS: dict[str, str] = {
    "image": "bytes",        # RGB JPEG (the source bytes as they are when already an upright RGB JPEG)
    "caption": "json",       # str | list[str], cleaned with dataprep.captions.pre_caption
    "sample_id": "str",      # stable id: the same source record always gets the same id
    "source": "str",         # which input it came from (the source's name, by default its file stem)
    "width": "int32",
    "height": "int32",
}


def captions_of(row: dict[str, Any]) -> list[str]:
    """All captions of a row, whether the column holds one string or a list."""
    caption = row["caption"]
    return [caption] if isinstance(caption, str) else list(caption)


# What a finished dataset folder holds besides its chunk sub-folders.
INDEX_NAME = "index.json"  # streaming's merged index (what StreamingDataset opens)
MANIFEST_NAME = "manifest.json"  # written last: a dataset without it is not finished
REJECTS_NAME = "rejects.jsonl"  # one dataprep.records.Reject per line


class ShardInfo(BaseModel):
    """One stored shard file of a dataset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    basename: str
    """Path relative to the dataset folder, as in index.json (chunk-00000/shard.00000.mds)."""
    sha256: str
    """Of the stored file (the compressed file when shards are compressed)."""
    bytes: int
    samples: int


class Manifest(BaseModel):
    """What a finished dataset holds; `dataprep verify` re-checks every shard against it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    columns: dict[str, str] = COLUMNS
    samples: int
    shards: list[ShardInfo]
    accepted_by_source: dict[str, int]
    rejected: dict[str, int]
    """Reject reason -> count (the reject report lists each record)."""
    job: str
    """Fingerprint of the settings that produced the dataset (a rerun with other settings is refused)."""

    @property
    def total_bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards)
