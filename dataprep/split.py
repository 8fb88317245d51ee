"""Deterministic held-out split by image, with each held-out image's captions grouped in one row.

Membership is a hash of (seed, source, image), not a random draw: every record of an image lands in
the same split, and a rerun or a resumed run splits identically. Retrieval evaluation needs
image -> all its captions, so held-out records of one image become one row with a caption list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Literal

from dataprep.records import Item, SourceRecord
from dataprep.sources import SourceSpec, read_source

Split = Literal["train", "eval"]
SPLITS: tuple[Split, ...] = ("train", "eval")


def is_held_out(source: str, image_ref: str, fraction: float, seed: int) -> bool:
    """Whether the image goes to the held-out split (about `fraction` of images do)."""
    digest = hashlib.blake2b(f"{seed}\0{source}\0{image_ref}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def group_captions(records: list[SourceRecord]) -> SourceRecord:
    """One record for an image: the first record's image, every record's captions in a list."""
    first = records[0]
    captions = [c for r in records for c in ([r.caption] if isinstance(r.caption, str) else r.caption)]
    return SourceRecord(
        source=first.source, file=first.file, key=first.image_ref, caption=captions,
        image_ref=first.image_ref, image_path=first.image_path, image_bytes=first.image_bytes,
    )


def assign_splits(
    sources: Iterable[SourceSpec], eval_fraction: float, seed: int
) -> Iterator[tuple[Split, Item, int]]:
    """(split, item, how many source items it stands for) for every item of every source, in a fixed order.

    Held-out records whose image is a file are gathered per source and emitted grouped at the end of
    that source (only their metadata is held); a record carrying its image bytes (a tar member) is its
    own image and is emitted at once. Rejects found by a source go with the training split's report.
    """
    for spec in sources:
        held_out: dict[str, list[SourceRecord]] = {}
        for item in read_source(spec):
            if not isinstance(item, SourceRecord) or not is_held_out(item.source, item.image_ref, eval_fraction, seed):
                yield "train", item, 1
            elif item.image_bytes is not None:
                yield "eval", group_captions([item]), 1
            else:
                held_out.setdefault(item.image_ref, []).append(item)
        for records in held_out.values():
            yield "eval", group_captions(records), len(records)
