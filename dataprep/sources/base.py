"""What every source shares: its config (`SourceSpec`), its whole-source error, field checks, and the
confinement of image paths to the image root."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from dataprep.limits import Limits, inside
from dataprep.records import Item, Reject, RejectReason, SourceRecord

SourceFormat = Literal["albef_json", "coco", "csv", "tsv", "jsonl", "webdataset", "cc3m", "sbu", "parquet"]


class SourceError(ValueError):
    """A whole source is unusable (missing file, not JSON, no such column): nothing of it can be read."""


class SourceSpec(BaseModel):
    """One input corpus of a conversion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: SourceFormat
    """albef_json: the official TCL/ALBEF pretraining or retrieval JSON (a list of {image, caption});
    coco: COCO captions JSON (images + annotations); csv / tsv: a table with a header row;
    jsonl: one JSON object per line; webdataset: img2dataset/WebDataset tar shards; image URL lists (to fetch
    with `tcl-dataprep download`): cc3m: Train_GCC-training.tsv (caption<TAB>url, no header); sbu: the SBU
    Captioned Photo Dataset's line-aligned urls + captions files; parquet: LAION-style url/caption columns."""
    path: str = Field(min_length=1)
    """The file; for webdataset a .tar, or a folder / s3:// prefix holding .tar files."""
    image_root: str | None = None
    """Folder that image paths are relative to; default: the folder of `path`."""
    name: str | None = Field(None, min_length=1)
    """Name in the `source` column, sample ids and the reject report; default: the file's stem."""
    image_column: str = "image"
    """csv/tsv/jsonl/parquet: the image path or URL column; in csv/tsv also a 0-based position."""
    caption_column: str = "caption"
    """csv/tsv/jsonl/parquet: the caption column (csv/tsv: or a position); webdataset: the caption field of a
    .json member."""
    columns: list[str] | None = None
    """csv/tsv: the column names of a table without a header row, in order (`columns=caption,url`): its first
    line is then data."""
    allow_outside_root: bool = False
    """Accept image paths that lead out of the image root (absolute paths, `../`, symlinks pointing out);
    otherwise such a record is rejected as outside_image_root."""
    _limits: Limits = PrivateAttr(default_factory=Limits)

    @field_validator("columns", mode="before")
    @classmethod
    def _split_columns(cls, value: object) -> object:
        """`columns=caption,url` on the command line arrives as one string."""
        return [name.strip() for name in value.split(",")] if isinstance(value, str) else value

    @property
    def source_name(self) -> str:
        return self.name or Path(self.path.rstrip("/")).stem

    @property
    def limits(self) -> Limits:
        """The conversion's per-record bounds (ConvertConfig hands its own to each of its sources)."""
        return self._limits

    @property
    def root(self) -> str:
        """The folder image paths are relative to."""
        return self.image_root if self.image_root is not None else os.path.dirname(self.path)

    def image_path(self, ref: str) -> str:
        """Where the image that the source calls `ref` lies (absolute refs stay as they are)."""
        return os.path.join(self.root, ref)

    def reject(self, key: str, reason: RejectReason, detail: str, file: str | None = None) -> Reject:
        """A reject of this source (file defaults to `path`; a tar source names the tar)."""
        return Reject(source=self.source_name, file=file or self.path, key=key, reason=reason, detail=detail)


def require_file(path: str) -> None:
    """Fail with the path in the message, before a reader starts."""
    if not os.path.isfile(path):
        raise SourceError(f"{path}: no such file")


def confine_image(spec: SourceSpec, item: Item) -> Item:
    """A record whose image file lies outside the source's image root becomes a reject (unless the source
    allows it); a kept one gets the symlink-free path, so the worker opens what was checked."""
    if spec.allow_outside_root or not isinstance(item, SourceRecord) or item.image_path is None:
        return item
    real = inside(item.image_path, spec.root)
    if real is None:
        return item.reject(RejectReason.OUTSIDE_IMAGE_ROOT, f"{item.image_ref!r} resolves to "
                           f"{os.path.realpath(item.image_path)}, outside {os.path.realpath(spec.root)}")
    return dataclasses.replace(item, image_path=real)


def is_url(ref: str) -> bool:
    """An image reference to fetch (http/https) rather than a path to read."""
    return ref.startswith(("http://", "https://"))


def image_record(spec: SourceSpec, key: str, caption: str | list[str], ref: str) -> SourceRecord:
    """The record of an image reference: a URL to download, or a path under the image root."""
    if is_url(ref):
        return SourceRecord(source=spec.source_name, file=spec.path, key=key, caption=caption, image_ref=ref,
                            image_url=ref)
    return SourceRecord(source=spec.source_name, file=spec.path, key=key, caption=caption, image_ref=ref,
                        image_path=spec.image_path(ref))


def _is_caption(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(c, str) for c in value)


def record_from_fields(spec: SourceSpec, key: str, entry: Any, image_field: str, caption_field: str) -> Item:
    """A record from a JSON object with an image path field and a caption (string or list) field."""
    if not isinstance(entry, dict):
        return spec.reject(key, RejectReason.MALFORMED_RECORD, f"expected an object, found {type(entry).__name__}")
    image, caption = entry.get(image_field), entry.get(caption_field)
    if not isinstance(image, str) or not image:
        return spec.reject(key, RejectReason.MALFORMED_RECORD, f"field {image_field!r} is missing or not a path")
    if not _is_caption(caption):
        return spec.reject(
            key, RejectReason.MALFORMED_RECORD, f"field {caption_field!r} is missing or not a string / list of strings"
        )
    return SourceRecord(
        source=spec.source_name, file=spec.path, key=key, caption=caption, image_ref=image,
        image_path=spec.image_path(image),
    )
