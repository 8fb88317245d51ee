"""Input corpora: each format module yields records (`read`) and knows nothing of MDS.

    for item in read_source(SourceSpec(format="tsv", path="cc3m.tsv", image_root="cc3m/")):
        ...  # SourceRecord (an image and its caption) or Reject (a bad row the source already saw)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from dataprep.records import Item, SourceRecord
from dataprep.sources import albef_json, cc3m, coco, jsonl, parquet, sbu, table, webdataset
from dataprep.sources.base import SourceError, SourceFormat, SourceSpec, confine_image

__all__ = ["SourceError", "SourceFormat", "SourceSpec", "count_source", "read_source"]

_READERS: dict[str, Callable[[SourceSpec], Iterator[Item]]] = {
    "albef_json": albef_json.read,
    "coco": coco.read,
    "csv": table.read,
    "tsv": table.read,
    "jsonl": jsonl.read,
    "webdataset": webdataset.read,
    "cc3m": cc3m.read,
    "sbu": sbu.read,
    "parquet": parquet.read,
}


def read_source(spec: SourceSpec) -> Iterator[Item]:
    """Every record of the source, in file order; image paths outside the image root are rejected here, for
    every format that names image files."""
    return (confine_image(spec, item) for item in _READERS[spec.format](spec))


def count_source(spec: SourceSpec, allow_urls: bool = False) -> int | None:
    """How many items read_source yields (for progress and ETA); None when only a download could tell.

    Also opens the source, so a missing file or a bad header fails here, before any work starts. A source
    of image URLs fails too unless allow_urls: a conversion reads what `tcl-dataprep download` fetched.
    """
    if spec.format == "webdataset":
        return webdataset.count(spec)
    count = 0
    for item in read_source(spec):
        if not allow_urls and isinstance(item, SourceRecord) and item.image_url is not None:
            raise SourceError(
                f"{spec.path}: record {item.key} is an image URL ({item.image_url}): fetch the images with"
                " `tcl-dataprep download` first, then convert its output (format=webdataset)"
            )
        count += 1
    return count
