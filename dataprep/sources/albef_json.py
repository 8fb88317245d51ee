"""The official TCL/ALBEF JSON: a list of {"image": path, "caption": str | [str, ...]}.

The same reader serves the pretraining files and the retrieval files (train entries add an
"image_id"; test entries carry a list of 5 captions). Keys are list indices. The list is streamed one
entry at a time (`dataprep.jsonstream`): memory does not grow with the file.
"""

from __future__ import annotations

from collections.abc import Iterator

from dataprep.jsonstream import BadRecord, JsonStreamError, iter_array
from dataprep.records import Item
from dataprep.sources.base import SourceError, SourceSpec, record_from_fields, require_file


def read(spec: SourceSpec) -> Iterator[Item]:
    require_file(spec.path)
    with open(spec.path, "rb") as file:
        try:
            for index, entry in enumerate(iter_array(file, spec.limits.max_record_bytes)):
                if isinstance(entry, BadRecord):
                    yield spec.reject(str(index), entry.reason, entry.detail)
                else:
                    yield record_from_fields(spec, str(index), entry, "image", "caption")
        except JsonStreamError as error:
            raise SourceError(f"{spec.path}: expected a JSON list of {{image, caption}} objects: {error}") from None
