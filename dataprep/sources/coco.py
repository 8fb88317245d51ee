"""COCO captions JSON ({"images": [...], "annotations": [...]}): one record per image with all its captions.

Keys are COCO image ids; a malformed image or annotation entry is reported by its list position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dataprep.records import Item, RejectReason, SourceRecord
from dataprep.sources.base import SourceError, SourceSpec, load_json


def _captions_by_image(spec: SourceSpec, annotations: list[Any]) -> tuple[dict[Any, list[str]], list[Item]]:
    captions: dict[Any, list[str]] = {}
    rejects: list[Item] = []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "image_id" not in annotation \
                or not isinstance(annotation.get("caption"), str):
            rejects.append(spec.reject(f"annotations[{index}]", RejectReason.MALFORMED_RECORD,
                                       "an annotation needs an image_id and a string caption"))
            continue
        captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return captions, rejects


def read(spec: SourceSpec) -> Iterator[Item]:
    data = load_json(spec.path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise SourceError(f"{spec.path}: expected a COCO captions file with 'images' and 'annotations' lists")
    captions, rejects = _captions_by_image(spec, data["annotations"])
    yield from rejects
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
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
