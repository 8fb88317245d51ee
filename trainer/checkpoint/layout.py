"""Names and facts on disk: one folder per tag, per-rank manifests that make a checkpoint "complete",
the pointer to the newest complete tag, and fsync for all three.

A rank's part of checkpoint `step_N` is complete when its manifest `step_N/rank_{r}.json` is there and
every file it lists exists with the listed size; the manifest is written (and fsynced) only after those
files are, so a crash or a full disk mid-save leaves no manifest. A checkpoint is complete when the part
of every rank that saved it (`world_size` in the manifests) is.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

POINTER = "latest"
UNIVERSAL = "universal"
"""Sub-folder of a tag holding its conversion to DeepSpeed's universal format (an elastic resume)."""
COMPLETE = "complete"
"""Marker file written last into a finished universal folder."""
_TAG = re.compile(r"step_(\d{8,})")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(tag: str) -> int | None:
    """The step a tag names; None for anything that is not a tag (a torn pointer, a stray folder)."""
    match = _TAG.fullmatch(tag)
    return int(match.group(1)) if match else None


def rng_name(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def manifest_name(rank: int) -> str:
    return f"rank_{rank}.json"


@dataclass(frozen=True)
class Manifest:
    """What one rank wrote for one tag: file name (relative to the tag folder) -> size in bytes, and the
    run's facts a resume must see before it builds its engine (world size, batch, data order)."""

    rank: int
    world_size: int
    files: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest | None:
        """None for anything but a well-formed manifest (an empty or torn file included)."""
        try:
            obj = json.loads(text)
            manifest = cls(int(obj["rank"]), int(obj["world_size"]), {str(k): int(v) for k, v in obj["files"].items()},
                           dict(obj.get("meta", {})))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return manifest if 0 <= manifest.rank < manifest.world_size else None


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the directory entries (new files, renames) of `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temp file, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_pointer(root: Path) -> str | None:
    """The tag the pointer in root names; None when it is missing, empty or torn (the caller falls back)."""
    try:
        return parse_pointer((root / POINTER).read_text(), root / POINTER)
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def parse_pointer(text: str, where: object) -> str | None:
    tag = text.strip()
    if step_of(tag) is None:
        logger.warning("checkpoint pointer %s is empty or damaged (%r): ignoring it", where, tag[:40])
        return None
    return tag


def tags(listing: dict[str, int]) -> list[str]:
    """The tags present in a listing (relative path -> size), oldest first."""
    found = {name.split("/", 1)[0] for name in listing if "/" in name}
    return sorted((t for t in found if step_of(t) is not None), key=lambda t: step_of(t) or 0)


def missing_files(manifest: Manifest, tag: str, listing: dict[str, int]) -> list[str]:
    """The files of `manifest` absent from `listing` or of another size, as tag-relative names."""
    return [name for name, size in manifest.files.items() if listing.get(f"{tag}/{name}") != size]
