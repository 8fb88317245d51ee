"""Parquet tables of image URLs (or paths) and captions: LAION-400M / LAION-5B metadata (`URL`, `TEXT`),
img2dataset-style (`url`, `caption`) or any columns named by image_column / caption_column.

Read in record batches with pyarrow (the `parquet` extra), two columns only. Keys are row numbers
(0-based, over the whole file). A row with a null or non-string value is rejected.
"""

from __future__ import annotations

from collections.abc import Iterator

from dataprep.records import Item, RejectReason
from dataprep.sources.base import SourceError, SourceSpec, image_record, require_file

FALLBACKS = {"image": ("URL", "url"), "caption": ("TEXT", "caption", "text")}
"""Columns tried when the spec keeps the default names and the file lacks them (LAION, img2dataset)."""
BATCH_ROWS = 8192


def _column(spec: SourceSpec, wanted: str, names: list[str]) -> str:
    if wanted in names:
        return wanted
    found = next((name for name in FALLBACKS.get(wanted, ()) if name in names), None)
    if found is None:
        raise SourceError(f"{spec.path}: no column {wanted!r} in {names} (set image_column / caption_column)")
    return found


def read(spec: SourceSpec) -> Iterator[Item]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError("format=parquet needs pyarrow: pip install 'tcl-train[parquet]'") from None
    import pyarrow

    require_file(spec.path)
    try:
        table = pq.ParquetFile(spec.path)
    except pyarrow.ArrowException as error:
        raise SourceError(f"{spec.path}: not a Parquet file: {error}") from None
    names = table.schema_arrow.names
    image = _column(spec, spec.image_column, names)
    caption = _column(spec, spec.caption_column, names)
    number = 0
    for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=[image, caption]):
        for ref, text in zip(batch.column(image).to_pylist(), batch.column(caption).to_pylist(), strict=True):
            key = str(number)
            number += 1
            if not isinstance(ref, str) or not ref:
                yield spec.reject(key, RejectReason.MALFORMED_RECORD, f"{image!r} is null, empty or not a string")
            elif not isinstance(text, str):
                yield spec.reject(key, RejectReason.MALFORMED_RECORD, f"{caption!r} is null or not a string")
            else:
                yield image_record(spec, key, text, ref)
