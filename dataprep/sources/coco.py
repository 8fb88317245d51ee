"""COCO captions JSON ({"images": [...], "annotations": [...]}): one record per image with all its captions.

Keys are COCO image ids; a malformed image or annotation entry is reported by its list position. The two
lists are streamed entry by entry (other members, such as licenses, are skipped unparsed): what is held is
each image's entry and captions, never the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dataprep.jsonstream import BadRecord, JsonStreamError, iter_object_lists
from dataprep.records import Item, RejectReason, SourceRecord
from dataprep.sources.base import SourceError, SourceSpec, require_file

_LISTS = frozenset({"images", "annotations"})
_ID = (int, str)
"""What an image id may be (JSON numbers and strings; a list or object id would not be hashable)."""


def _entries(spec: SourceSpec) -> dict[str, list[Any]]:
    """Entries of the images and annotations lists (a BadRecord where an entry could not be parsed)."""
    found: dict[str, list[Any]] = {key: [] for key in _LISTS}
    require_file(spec.path)
    with open(spec.path, "rb") as file:
        try:
            for key, entry in iter_object_lists(file, _LISTS, spec.limits.max_record_bytes):
                found[key].append(entry)
        except JsonStreamError as error:
            raise SourceError(f"{spec.path}: expected a COCO captions file with 'images' and 'annotations' "
                              f"lists: {error}") from None
    return found


def _captions_by_image(spec: SourceSpec, annotations: list[Any]) -> tuple[dict[Any, list[str]], list[Item]]:
    captions: dict[Any, list[str]] = {}
    rejects: list[Item] = []
    for index, annotation in enumerate(annotations):
        key = f"annotations[{index}]"
        if isinstance(annotation, BadRecord):
            rejects.append(spec.reject(key, annotation.reason, annotation.detail))
        elif not isinstance(annotation, dict) or not isinstance(annotation.get("image_id"), _ID) \
                or not isinstance(annotation.get("caption"), str):
            rejects.append(spec.reject(key, RejectReason.MALFORMED_RECORD,
                                       "an annotation needs an image_id and a string caption"))
        else:
            captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return captions, rejects


def read(spec: SourceSpec) -> Iterator[Item]:
    entries = _entries(spec)
    captions, rejects = _captions_by_image(spec, entries["annotations"])
    yield from rejects
    for index, image in enumerate(entries["images"]):
        if isinstance(image, BadRecord):
            yield spec.reject(f"images[{index}]", image.reason, image.detail)
            continue
        if not isinstance(image, dict) or not isinstance(image.get("id"), _ID) \
                or not isinstance(image.get("file_name"), str):
            yield spec.reject(f"images[{index}]", RejectReason.MALFORMED_RECORD, "an image needs an id and a file_name")
            continue
        key = str(image["id"])
        if image["id"] not in captions:
            yield spec.reject(key, RejectReason.EMPTY_CAPTION, "the image has no caption annotation")
            continue
        yield SourceRecord(
            source=spec.source_name, file=spec.path, key=key, caption=captions[image["id"]],
            image_ref=image["file_name"], image_path=spec.image_path(image["file_name"]),
        )
