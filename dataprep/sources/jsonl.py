"""JSONL: one object per line with an image path field and a caption field (string or list).

Keys are line numbers (1-based); blank lines are skipped. Lines are read to at most the record bound: a
longer line (a 2 GB file without a newline) is rejected and skipped without being held.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from dataprep.jsonstream import BadRecord, parse_record
from dataprep.records import Item, RejectReason
from dataprep.sources.base import SourceSpec, record_from_fields, require_file


def bounded_lines(file: BinaryIO, max_bytes: int) -> Iterator[bytes | int]:
    """Each line (without its newline) of at most max_bytes, or the length of a longer one (skipped unread)."""
    while line := file.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line.rstrip(b"\r\n")
            continue
        length = len(line)
        while (rest := file.readline(1 << 20)) and not rest.endswith(b"\n"):
            length += len(rest)
        yield length + len(rest.rstrip(b"\r\n"))


def read(spec: SourceSpec) -> Iterator[Item]:
    require_file(spec.path)
    max_bytes = spec.limits.max_record_bytes
    with open(spec.path, "rb") as file:
        for number, line in enumerate(bounded_lines(file, max_bytes), start=1):
            key = str(number)
            if isinstance(line, int):
                yield spec.reject(key, RejectReason.RECORD_TOO_LARGE, f"{line} bytes > {max_bytes}")
                continue
            if not line.strip():
                continue
            entry = parse_record(line, max_bytes)
            if isinstance(entry, BadRecord):
                yield spec.reject(key, entry.reason, entry.detail)
            else:
                yield record_from_fields(spec, key, entry, spec.image_column, spec.caption_column)
