"""The per-record work a conversion worker does: read, validate and normalise the image, clean captions.

Runs in worker processes, so it imports neither MDS nor torch (spawned workers start fast).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from dataprep.captions import pre_caption
from dataprep.images import ImageOptions, ImageRejected, process_image
from dataprep.records import Item, Reject, RejectReason, SourceRecord, is_utf8_text


@dataclass(frozen=True, slots=True)
class Accepted:
    """A record ready to become an MDS row."""

    image: bytes
    width: int
    height: int
    caption: str | list[str]
    digest: str
    """Hash of the source image bytes and the cleaned caption: equal digests are exact duplicates."""


Outcome = Accepted | Reject


def clean_caption(caption: str | list[str], max_words: int) -> str | list[str] | None:
    """Clean one caption or each of a list (dropping the empty ones); None if nothing is left."""
    if isinstance(caption, str):
        return pre_caption(caption, max_words) or None
    cleaned = [text for text in (pre_caption(c, max_words) for c in caption) if text]
    return cleaned or None


def record_digest(image: bytes, caption: str | list[str]) -> str:
    """Identity of (image bytes, caption) for exact-duplicate detection."""
    digest = hashlib.blake2b(image, digest_size=16)
    digest.update(json.dumps(caption).encode())
    return digest.hexdigest()


def _read_image(record: SourceRecord) -> bytes:
    if record.image_bytes is not None:
        return record.image_bytes
    assert record.image_path is not None
    try:
        return Path(record.image_path).read_bytes()
    except FileNotFoundError:
        raise ImageRejected(RejectReason.MISSING_FILE, f"no file at {record.image_path}") from None
    except OSError as error:
        raise ImageRejected(RejectReason.UNREADABLE_FILE, f"{record.image_path}: {error}") from None


def process_record(item: Item, images: ImageOptions, max_words: int) -> Outcome:
    """A row for the record, or the reason it cannot be one (sources' own rejects pass through)."""
    if isinstance(item, Reject):
        return item
    captions = [item.caption] if isinstance(item.caption, str) else item.caption
    if not all(is_utf8_text(c) for c in captions):
        return item.reject(RejectReason.UNDECODABLE_TEXT, "caption holds bytes that are not UTF-8")
    caption = clean_caption(item.caption, max_words)
    if caption is None:
        return item.reject(RejectReason.EMPTY_CAPTION, f"nothing left of {item.caption!r} after cleaning")
    try:
        data = _read_image(item)
        image = process_image(data, images)
    except ImageRejected as rejected:
        return item.reject(rejected.reason, rejected.detail)
    return Accepted(image.data, image.width, image.height, caption, record_digest(data, caption))


def process_batch(items: list[Item], images: ImageOptions, max_words: int) -> list[Outcome]:
    """One task of the worker pool (batched to amortise inter-process overhead)."""
    return [process_record(item, images, max_words) for item in items]
