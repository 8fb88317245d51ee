"""JSONL: one object per line with an image path field and a caption field (string or list).

Keys are line numbers (1-based); blank lines are skipped. Lines are read to at most the record bound: a
longer line (a 2 GB file without a newline) is rejected and skipped without being held.
"""

from __future__ import annotations

from collections.abc import Iterator

from dataprep.jsonstream import BadRecord, parse_record
from dataprep.limits import bounded_lines
from dataprep.records import Item, RejectReason
from dataprep.sources.base import SourceSpec, record_from_fields, require_file


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
