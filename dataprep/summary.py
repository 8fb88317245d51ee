"""What a dataset holds at a glance (`dataprep inspect`): counts, sizes, caption statistics, examples."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

from pydantic import BaseModel

from dataprep.reader import iter_rows, load_manifest
from dataprep.schema import captions_of
from dataprep.storage import open_store


class Stats(BaseModel):
    min: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            return cls(min=0, mean=0, max=0)
        return cls(min=min(values), mean=sum(values) / len(values), max=max(values))


class Example(BaseModel):
    sample_id: str
    source: str
    caption: str | list[str]
    width: int
    height: int


class DatasetSummary(BaseModel):
    location: str
    samples: int
    shards: int
    bytes: int
    accepted_by_source: dict[str, int]
    rejected: dict[str, int]
    rows_read: int
    """Rows the statistics below are computed over (all, unless limited)."""
    captions_per_row: Stats
    words_per_caption: Stats
    width: Stats
    height: Stats
    examples: list[Example]


def summarize(location: str, examples: int = 5, max_rows: int | None = None) -> DatasetSummary:
    """Summarise the dataset at location, reading at most max_rows rows for the statistics."""
    dataset = open_store(location)
    manifest = load_manifest(dataset)
    captions_per_row: list[int] = []
    words: list[int] = []
    widths: list[int] = []
    heights: list[int] = []
    shown: list[Example] = []
    for row in islice(iter_rows(dataset), max_rows):
        captions = captions_of(row)
        captions_per_row.append(len(captions))
        words.extend(len(caption.split()) for caption in captions)
        widths.append(row["width"])
        heights.append(row["height"])
        if len(shown) < examples:
            shown.append(Example.model_validate({k: row[k] for k in Example.model_fields}))
    return DatasetSummary(
        location=dataset.uri, samples=manifest.samples, shards=len(manifest.shards), bytes=manifest.total_bytes,
        accepted_by_source=manifest.accepted_by_source, rejected=manifest.rejected, rows_read=len(widths),
        captions_per_row=Stats.of(captions_per_row), words_per_caption=Stats.of(words),
        width=Stats.of(widths), height=Stats.of(heights), examples=shown,
    )
