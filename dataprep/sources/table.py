"""CSV / TSV: an image column (a path, or a URL to download) and a caption column.

With a header row, columns are found by name or 0-based position; a table without one (CC3M's
`caption<TAB>url`) names its columns with `columns=caption,url` and its first line is data.
Keys are line numbers (1-based; a header is line 1). Lines are decoded one by one, so a line with
bytes that are not UTF-8 is rejected alone; a row with the wrong number of fields (an unquoted
delimiter inside a caption, a cut-off line) is rejected rather than read with shifted columns.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from dataprep.records import Item, RejectReason, is_utf8_text
from dataprep.sources.base import SourceError, SourceSpec, image_record, require_file


def _position(column: str, names: list[str]) -> int | None:
    if column in names:
        return names.index(column)
    return int(column) if column.isdigit() and int(column) < len(names) else None


def _positions(spec: SourceSpec, names: list[str], *columns: str) -> list[int]:
    """Where each column is (by name or 0-based position), or a SourceError naming every one missing."""
    found = [_position(column, names) for column in columns]
    missing = [column for column, at in zip(columns, found, strict=True) if at is None]
    if missing:
        where = "columns" if spec.columns else "the header"
        raise SourceError(f"{spec.path}: no column {missing} in {where} {names} (set image_column / caption_column"
                          " to names or 0-based positions; a table without a header needs `columns`)")
    return [at for at in found if at is not None]


def read_table(spec: SourceSpec, delimiter: str, columns: list[str] | None, image: str, caption: str) -> Iterator[Item]:
    """Rows of a delimited table; `columns` None: the first line is the header."""
    require_file(spec.path)
    with open(spec.path, "rb") as file:
        reader = csv.reader((line.decode("utf-8", "surrogateescape") for line in file), delimiter=delimiter)
        if columns is None:
            header = next(reader, None)
            if header is None:
                raise SourceError(f"{spec.path}: empty file, expected a header row (or give `columns`)")
            header[0] = header[0].removeprefix("\ufeff")
            names = header
        else:
            names = columns
        image_at, caption_at = _positions(spec, names, image, caption)
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
            if len(row) != len(names):
                yield spec.reject(key, RejectReason.MALFORMED_RECORD, f"expected {len(names)} fields, found {len(row)}")
            elif not all(is_utf8_text(field) for field in row):
                yield spec.reject(key, RejectReason.UNDECODABLE_TEXT, "the line holds bytes that are not UTF-8")
            elif not row[image_at]:
                yield spec.reject(key, RejectReason.MALFORMED_RECORD, f"empty {names[image_at]!r}")
            else:
                yield image_record(spec, key, row[caption_at], row[image_at])


def read(spec: SourceSpec) -> Iterator[Item]:
    delimiter = "\t" if spec.format == "tsv" else ","
    return read_table(spec, delimiter, spec.columns, spec.image_column, spec.caption_column)
