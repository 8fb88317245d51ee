"""The per-record work a conversion worker does: read, validate and normalise the image, clean captions.

Runs in worker processes, so it imports neither MDS nor torch (spawned workers start fast).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from dataprep.captions import pre_caption
from dataprep.images import ImageOptions, ImageRejected, process_image
from dataprep.limits import Limits, read_regular_file
from dataprep.records import Item, Reject, RejectReason, SourceRecord, is_utf8_text


@dataclass(frozen=True, slots=True)
class DroppedCaption:
    """One caption of a kept record that is not in its row (a caption-level line of the reject report)."""

    index: int
    """Its position among the record's captions."""
    reason: RejectReason
    caption: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A record ready to become an MDS row."""

    image: bytes
    width: int
    height: int
    caption: str | list[str]
    digest: str
    """Hash of the source image bytes and the cleaned caption: equal digests are exact duplicates."""
    dropped: tuple[DroppedCaption, ...] = ()


Outcome = Accepted | Reject


def clean_captions(caption: str | list[str], max_words: int) -> tuple[str | list[str] | None, list[DroppedCaption]]:
    """Clean one caption or each of a list; of a list, drop (and name) the ones empty after cleaning and the
    repeats of an earlier one. None if nothing is left."""
    if isinstance(caption, str):
        return pre_caption(caption, max_words) or None, []
    kept: dict[str, None] = {}
    dropped = []
    for index, text in enumerate(caption):
        cleaned = pre_caption(text, max_words)
        if not cleaned:
            dropped.append(DroppedCaption(index, RejectReason.CAPTION_DROPPED_EMPTY, text))
        elif cleaned in kept:
            dropped.append(DroppedCaption(index, RejectReason.CAPTION_DROPPED_DUPLICATE, text))
        else:
            kept[cleaned] = None
    return (list(kept) or None), dropped


def record_digest(image: bytes, caption: str | list[str]) -> str:
    """Identity of (image bytes, caption) for exact-duplicate detection."""
    digest = hashlib.blake2b(image, digest_size=16)
    digest.update(json.dumps(caption).encode())
    return digest.hexdigest()


def _read_image(record: SourceRecord, limits: Limits) -> bytes:
    if record.image_bytes is not None:
        return record.image_bytes
    assert record.image_path is not None
    return read_regular_file(record.image_path, limits.max_file_bytes)


def process_record(item: Item, images: ImageOptions, max_words: int, limits: Limits) -> Outcome:
    """A row for the record, or the reason it cannot be one (sources' own rejects pass through)."""
    if isinstance(item, Reject):
        return item
    captions = [item.caption] if isinstance(item.caption, str) else item.caption
    if not all(is_utf8_text(c) for c in captions):
        return item.reject(RejectReason.UNDECODABLE_TEXT, "caption holds bytes that are not UTF-8")
    longest = max((len(c.encode()) for c in captions), default=0)
    if longest > limits.max_caption_bytes:
        return item.reject(RejectReason.CAPTION_TOO_LONG, f"a caption of {longest} bytes > {limits.max_caption_bytes}")
    caption, dropped = clean_captions(item.caption, max_words)
    if caption is None:
        return item.reject(RejectReason.EMPTY_CAPTION, f"nothing left of {item.caption!r} after cleaning")
    try:
        data = _read_image(item, limits)
        image = process_image(data, images)
    except ImageRejected as rejected:
        return item.reject(rejected.reason, rejected.detail)
    return Accepted(image.data, image.width, image.height, caption, record_digest(data, caption), tuple(dropped))


def process_batch(items: list[Item], images: ImageOptions, max_words: int, limits: Limits) -> list[Outcome]:
    """One task of the worker pool (batched to amortise inter-process overhead)."""
    return [process_record(item, images, max_words, limits) for item in items]


def crashed(item: Item) -> Outcome:
    """The outcome of a record whose worker died on its batch twice."""
    if isinstance(item, Reject):
        return item
    return item.reject(RejectReason.WORKER_CRASHED, "the worker process died on this record's batch, twice")
