"""The official TCL/ALBEF JSON: a list of {"image": path, "caption": str | [str, ...]}.

The same reader serves the pretraining files and the retrieval files (train entries add an
"image_id"; test entries carry a list of 5 captions). Keys are list indices.
"""

from __future__ import annotations

from collections.abc import Iterator

from dataprep.records import Item
from dataprep.sources.base import SourceError, SourceSpec, load_json, record_from_fields


def read(spec: SourceSpec) -> Iterator[Item]:
    entries = load_json(spec.path)
    if not isinstance(entries, list):
        found = type(entries).__name__
        raise SourceError(f"{spec.path}: expected a JSON list of {{image, caption}} objects, found {found}")
    for index, entry in enumerate(entries):
        yield record_from_fields(spec, str(index), entry, "image", "caption")
