"""What a source yields: a record to convert, or a reject the source already knows about.

Sources know nothing of MDS; they describe where an image is and what the caption says. The worker
(`dataprep.process`) turns a record into a row or a reject; the reject report is a JSONL of `Reject`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class RejectReason(StrEnum):
    """Why a record was skipped (one line of the reject report and one row of the summary)."""

    MISSING_FILE = "missing_file"
    UNREADABLE_FILE = "unreadable_file"
    OUTSIDE_IMAGE_ROOT = "outside_image_root"
    """The image path leads out of the source's image_root (../, an absolute path, a symlink)."""
    NOT_A_FILE = "not_a_regular_file"
    """A FIFO, a device (/dev/zero), a directory: reading it would block or never end."""
    FILE_TOO_LARGE = "file_too_large"
    """An image file or tar member over limits.max_file_bytes (declared or actual size)."""
    ZERO_SIZE = "zero_size"
    CORRUPT_IMAGE = "corrupt_image"
    TRUNCATED_IMAGE = "truncated_image"
    TOO_SMALL = "too_small"
    TOO_MANY_PIXELS = "too_many_pixels"
    """Over images.max_pixels by its header, refused before decoding (a decompression bomb)."""
    BAD_ASPECT_RATIO = "bad_aspect_ratio"
    EMPTY_CAPTION = "empty_caption"
    CAPTION_TOO_LONG = "caption_too_long"
    UNDECODABLE_TEXT = "undecodable_text"
    MALFORMED_RECORD = "malformed_record"
    RECORD_TOO_LARGE = "record_too_large"
    """A JSON record (list entry, JSONL line, .json member) over limits.max_record_bytes."""
    TOO_DEEPLY_NESTED = "too_deeply_nested"
    CORRUPT_ARCHIVE = "corrupt_archive"
    DUPLICATE = "duplicate"
    WORKER_CRASHED = "worker_crashed"
    """The worker process died on the record's batch twice (killed, out of memory, a crash in a decoder)."""
    CAPTION_DROPPED_EMPTY = "caption_dropped_empty"
    """Caption level: one caption of a kept record was empty after cleaning."""
    # fetching an image URL (`tcl-dataprep download`); a body over the size cap is file_too_large
    HTTP_404 = "http_404"
    HTTP_CLIENT_ERROR = "http_4xx"
    """Another 4xx answer (403, 410...): the detail has the status."""
    HTTP_SERVER_ERROR = "http_5xx"
    """A 5xx answer after every retry."""
    RATE_LIMITED = "rate_limited"
    """429 Too Many Requests after every retry."""
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    REDIRECT_LOOP = "redirect_loop"
    TRUNCATED_DOWNLOAD = "truncated_download"
    """The connection closed before the body that Content-Length announced was complete."""
    NOT_AN_IMAGE = "not_an_image"
    OPTED_OUT = "opted_out"
    """The site opts out: an X-Robots-Tag directive (noai, noimageai...) or its robots.txt."""
    BAD_URL = "bad_url"
    """Not an http(s) URL."""
    CAPTION_DROPPED_DUPLICATE = "caption_dropped_duplicate"
    """Caption level: one caption of a kept record repeated an earlier one of the same image after cleaning."""


CAPTION_LEVEL = frozenset({RejectReason.CAPTION_DROPPED_EMPTY, RejectReason.CAPTION_DROPPED_DUPLICATE})
"""Reasons that count dropped captions of kept records, not skipped records."""


class Reject(BaseModel):
    """One skipped record: where it came from and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    """The source's name (as in the `source` column)."""
    file: str
    """The file the record came from (the JSON/CSV/JSONL file or the tar)."""
    key: str
    """Line number (CSV/JSONL, 1-based), list index (JSON), image id (COCO), tar/key (WebDataset)
    or the image path (a held-out image's grouped row)."""
    reason: RejectReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """An image and its caption(s) as the source has them; exactly one of image_path/image_bytes/image_url is set
    (URLs are fetched by `tcl-dataprep download`, whose output a conversion reads)."""

    source: str
    file: str
    key: str
    caption: str | list[str]
    image_ref: str
    """What identifies the image within its source (the path as written, or tar/key): held-out
    splits and caption grouping go by it."""
    image_path: str | None = None
    image_bytes: bytes | None = None
    image_url: str | None = None

    @property
    def sample_id(self) -> str:
        """Stable id: the same source record always gets the same id."""
        return f"{self.source}:{self.key}"

    def reject(self, reason: RejectReason, detail: str = "") -> Reject:
        return Reject(source=self.source, file=self.file, key=self.key, reason=reason, detail=detail)


Item = SourceRecord | Reject
"""What sources yield and workers consume."""


def is_utf8_text(value: str) -> bool:
    """False for strings holding bytes that were not UTF-8 (lone surrogates from surrogateescape decoding
    or from JSON escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
