"""CSV / TSV with a header row (CC3M style): an image path column and a caption column.

Keys are line numbers (1-based, the header is line 1). Lines are decoded one by one, so a line with
bytes that are not UTF-8 is rejected alone; a row with the wrong number of fields (an unquoted
delimiter inside a caption, a cut-off line) is rejected rather than read with shifted columns.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from dataprep.records import Item, RejectReason, SourceRecord, is_utf8_text
from dataprep.sources.base import SourceError, SourceSpec, require_file


def read(spec: SourceSpec) -> Iterator[Item]:
    delimiter = "\t" if spec.format == "tsv" else ","
    require_file(spec.path)
    with open(spec.path, "rb") as file:
        reader = csv.reader((line.decode("utf-8", "surrogateescape") for line in file), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise SourceError(f"{spec.path}: empty file, expected a header row")
        header[0] = header[0].removeprefix("\ufeff")
        missing = [c for c in (spec.image_column, spec.caption_column) if c not in header]
        if missing:
            raise SourceError(
                f"{spec.path}: no column {missing} in the header {header} (set image_column / caption_column)"
            )
        image_at, caption_at = header.index(spec.image_column), header.index(spec.caption_column)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # a NUL byte, a field over the size limit (an unclosed quote)
                yield spec.reject(str(reader.line_num), RejectReason.MALFORMED_RECORD, f"not CSV: {error}")
                continue
            key = str(reader.line_num)
            if not row:
                continue
            if len(row) != len(header):
                detail = f"expected {len(header)} fields, found {len(row)}"
                yield spec.reject(key, RejectReason.MALFORMED_RECORD, detail)
            elif not all(is_utf8_text(field) for field in row):
                yield spec.reject(key, RejectReason.UNDECODABLE_TEXT, "the line holds bytes that are not UTF-8")
            elif not row[image_at]:
                yield spec.reject(key, RejectReason.MALFORMED_RECORD, f"empty {spec.image_column!r}")
            else:
                image = row[image_at]
                yield SourceRecord(
                    source=spec.source_name, file=spec.path, key=key, caption=row[caption_at],
                    image_ref=image, image_path=spec.image_path(image),
                )
