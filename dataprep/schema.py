"""The MDS column layout and the dataset manifest: dataprep writes them, the trainer reads them. Torch-free.

One row per image. `caption` holds what the source record has: a string, or a list of strings
(retrieval splits group all of an image's captions in one row; the trainer draws one per visit).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
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


def column_problem(shard: str, names: Sequence[str], encodings: Sequence[str]) -> str | None:
    """What is wrong with a shard's declared columns, in one line naming the shard and the column; None if
    they are exactly COLUMNS.

    Checked before any row of a dataset is decoded: a column's encoding decides how its bytes are decoded,
    and an untrusted index.json could declare `pkl` (unpickling runs code) or any other decoder.
    """
    if len(names) != len(encodings) or len(set(names)) != len(names):
        return f"shard {shard}: {len(names)} column names for {len(encodings)} encodings, or a name repeated"
    declared = dict(zip(names, encodings, strict=True))
    for name, encoding in declared.items():
        if name not in COLUMNS:
            return f"shard {shard}: column {name!r} ({encoding}) is not a dataprep column (expected {sorted(COLUMNS)})"
        if encoding != COLUMNS[name]:
            return f"shard {shard}: column {name!r} is encoded as {encoding!r}, expected {COLUMNS[name]!r}"
    missing = [name for name in COLUMNS if name not in declared]
    return f"shard {shard} lacks column(s) {missing}" if missing else None


def index_problems(index: Any) -> list[str]:
    """column_problem for every shard of a parsed index.json, plus one line if its layout is not streaming's."""
    shards = index.get("shards") if isinstance(index, dict) else None
    if not isinstance(shards, list):
        return ["index.json holds no 'shards' list"]
    problems = []
    for number, shard in enumerate(shards):
        entry = shard if isinstance(shard, dict) else {}
        files = [data for data in (entry.get("raw_data"), entry.get("zip_data")) if isinstance(data, dict)]
        basename = files[0].get("basename") if files else None
        names, encodings = entry.get("column_names"), entry.get("column_encodings")
        if not isinstance(basename, str) or not _strings(names) or not _strings(encodings):
            problems.append(f"shard {number} of index.json has no basename, column_names or column_encodings")
        elif not all(_inside(data.get("basename")) for data in files):
            problems.append(f"shard {number} of index.json names a file outside the dataset folder: {basename!r}")
        elif problem := column_problem(basename, names, encodings):
            problems.append(problem)
    return problems


def _inside(basename: Any) -> bool:
    path = PurePosixPath(basename) if isinstance(basename, str) else None
    return path is not None and not path.is_absolute() and ".." not in path.parts


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


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
