"""Shared-memory segments that crashed runs leave in /dev/shm: removed when no live process maps them.

Both streaming (its `<prefix>_locals`, `_barrier`... segments) and DeepSpeed's CPU all-reduce (about 66 MB
per rank, `deepspeed_allreduce_buffer_<uid>_<master addr>_<port>_<rank>`) create segments that outlive a
SIGKILLed process. A segment is in use while some process maps it, and every user keeps its segments
mapped until it exits, so "mapped by no process" tells the stale ones apart without knowing who made them.
"""

from __future__ import annotations

import re
from pathlib import Path

SHM_DIR = Path("/dev/shm")


def mapped_segments() -> set[str]:
    """Names under /dev/shm that some process maps (processes we may not read are skipped)."""
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(re.findall(r"/dev/shm/(\S+)", maps.read_text()))
        except OSError:  # the process ended, or is not ours to read
            continue
    return mapped


def remove_unmapped(pattern: re.Pattern[str], shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink the segments in shm_dir whose names fully match `pattern` and that no live process maps;
    return their names."""
    if not shm_dir.is_dir():
        return []
    segments = [p.name for p in shm_dir.iterdir() if pattern.fullmatch(p.name)]
    if not segments:
        return []
    mapped = mapped_segments()
    stale = [name for name in segments if name not in mapped]
    for name in stale:
        (shm_dir / name).unlink(missing_ok=True)
    return stale
