"""The MDS column layout: dataprep writes it, the trainer reads it. Torch-free.

One row per image. `caption` holds what the source record has: a string, or a list of strings
(retrieval splits group all of an image's captions in one row; the trainer draws one per visit).
"""

from __future__ import annotations

from typing import Any

COLUMNS: dict[str, str] = {
    "image": "bytes",        # encoded JPEG (or the original PNG/WebP bytes when kept unchanged)
    "caption": "json",       # str | list[str], cleaned with dataprep.captions.pre_caption
    "sample_id": "str",      # stable id: the same source record always gets the same id
    "source": "str",         # which input it came from (file name or tar key)
    "width": "int32",
    "height": "int32",
}


def captions_of(row: dict[str, Any]) -> list[str]:
    """All captions of a row, whether the column holds one string or a list."""
    caption = row["caption"]
    return [caption] if isinstance(caption, str) else list(caption)
