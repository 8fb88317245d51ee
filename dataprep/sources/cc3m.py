"""Conceptual Captions 3M as Google ships it: `Train_GCC-training.tsv` / `Validation_GCC-1.1.0-Validation.tsv`,
one `caption<TAB>url` line per image and no header row. Keys are line numbers (1-based)."""

from __future__ import annotations

from collections.abc import Iterator

from dataprep.records import Item
from dataprep.sources.base import SourceSpec
from dataprep.sources.table import read_table

COLUMNS = ["caption", "url"]


def read(spec: SourceSpec) -> Iterator[Item]:
    return read_table(spec, "\t", COLUMNS, "url", "caption")
