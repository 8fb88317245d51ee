"""The SBU Captioned Photo Dataset as its authors ship it: `SBU_captioned_photo_dataset_urls.txt` and
`SBU_captioned_photo_dataset_captions.txt`, one URL and one caption per line, aligned by line number.

`path` is the urls file (the captions file is the one beside it with `captions` for `urls` in its name)
or the folder holding both. Keys are line numbers (1-based). A line the other file lacks is rejected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import zip_longest

from dataprep.records import Item, RejectReason
from dataprep.sources.base import SourceError, SourceSpec, image_record, require_file

URLS_NAME = "SBU_captioned_photo_dataset_urls.txt"
CAPTIONS_NAME = "SBU_captioned_photo_dataset_captions.txt"


def files(spec: SourceSpec) -> tuple[str, str]:
    """(urls file, captions file) of the source."""
    if os.path.isdir(spec.path):
        return os.path.join(spec.path, URLS_NAME), os.path.join(spec.path, CAPTIONS_NAME)
    folder, name = os.path.split(spec.path)
    if "urls" not in name:
        raise SourceError(f"{spec.path}: expected the urls file ({URLS_NAME}) or the folder holding it")
    return spec.path, os.path.join(folder, name.replace("urls", "captions"))


def _lines(path: str) -> Iterator[str | bytes]:
    """Each line without its line break, decoded; the raw bytes of a line that is not UTF-8."""
    with open(path, "rb") as file:
        for line in file:
            raw = line.rstrip(b"\r\n")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                yield raw


def read(spec: SourceSpec) -> Iterator[Item]:
    urls, captions = files(spec)
    require_file(urls)
    require_file(captions)
    for number, (url, caption) in enumerate(zip_longest(_lines(urls), _lines(captions)), start=1):
        key = str(number)
        if url is None or caption is None:
            lacking = "urls" if url is None else "captions"
            yield spec.reject(key, RejectReason.MALFORMED_RECORD, f"the {lacking} file has no line {number}")
        elif isinstance(url, bytes) or isinstance(caption, bytes):
            yield spec.reject(key, RejectReason.UNDECODABLE_TEXT, "the line holds bytes that are not UTF-8")
        elif not url.strip():
            yield spec.reject(key, RejectReason.MALFORMED_RECORD, "empty URL")
        else:
            yield image_record(spec, key, caption.strip(), url.strip())
