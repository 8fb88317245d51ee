"""JSONL: one object per line with an image path field and a caption field (string or list).

Keys are line numbers (1-based); blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from dataprep.records import Item, RejectReason
from dataprep.sources.base import SourceSpec, record_from_fields, require_file


def read(spec: SourceSpec) -> Iterator[Item]:
    require_file(spec.path)
    with open(spec.path, "rb") as file:
        for number, line in enumerate(file, start=1):
            key = str(number)
            if not line.strip():
                continue
            try:
                entry = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield spec.reject(key, RejectReason.UNDECODABLE_TEXT, "the line holds bytes that are not UTF-8")
                continue
            except json.JSONDecodeError as error:
                yield spec.reject(key, RejectReason.MALFORMED_RECORD, f"not JSON: {error}")
                continue
            yield record_from_fields(spec, key, entry, spec.image_column, spec.caption_column)
