"""WebDataset / img2dataset tar shards: members `key.jpg` (or png, webp...) + `key.txt` or `key.json`.

`path` is one .tar, or a local folder / s3:// prefix whose .tar files are read in name order. A
shard on S3 is downloaded to a temporary file first (the download retries; a stream could not).
Keys are `<tar name>/<key>`; members of one key are adjacent, as WebDataset writers put them.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator

from dataprep.jsonstream import BadRecord, parse_record
from dataprep.records import Item, RejectReason, SourceRecord
from dataprep.sources.base import SourceError, SourceSpec
from dataprep.storage import Store, is_remote, open_store

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def _shards(spec: SourceSpec) -> tuple[Store, list[str]]:
    """The folder holding the shards and their names in it."""
    path = spec.path.rstrip("/")
    if path.endswith(".tar"):
        folder, _, name = path.rpartition("/")
        store = open_store(folder or ".")
        if not store.exists(name):
            raise SourceError(f"{spec.path}: no such tar file")
        return store, [name]
    store = open_store(path)
    names = [name for name in store.list() if name.endswith(".tar")]
    if not names:
        raise SourceError(f"{spec.path}: no .tar files there")
    return store, names


def _split_name(name: str) -> tuple[str, str]:
    """'dir/000123.jpg' -> ('dir/000123', 'jpg'): the key ends at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _grouped_members(archive: tarfile.TarFile, max_bytes: int) -> Iterator[tuple[str, dict[str, bytes | int]]]:
    """(key, {extension: bytes}) for each run of adjacent members sharing a key; a member over max_bytes
    (by its header: a sparse member may declare terabytes in a small tar) stands as its size, unread."""
    key, members = None, {}
    for member in archive:
        if not member.isfile():
            continue
        member_key, extension = _split_name(member.name)
        if member_key != key and members:
            yield key, members
            members = {}
        key = member_key
        if member.size > max_bytes:
            members[extension] = member.size
            continue
        file = archive.extractfile(member)
        assert file is not None  # regular files always have data
        members[extension] = file.read(max_bytes + 1)
    if members:
        yield key, members


def _record(spec: SourceSpec, file: str, key: str, members: dict[str, bytes | int]) -> Item:
    oversized = {ext: size for ext, size in members.items() if isinstance(size, int)}
    if oversized:
        detail = ", ".join(f".{ext} member of {size} bytes" for ext, size in sorted(oversized.items()))
        return spec.reject(key, RejectReason.FILE_TOO_LARGE, f"{detail} > {spec.limits.max_file_bytes}", file)
    image = next((members[ext] for ext in IMAGE_EXTENSIONS if ext in members), None)
    if image is None:
        return spec.reject(key, RejectReason.MISSING_FILE, f"no image member among {sorted(members)}", file)
    if "txt" in members:
        try:
            caption = members["txt"].decode("utf-8")
        except UnicodeDecodeError:
            return spec.reject(key, RejectReason.UNDECODABLE_TEXT, "the .txt member is not UTF-8", file)
    elif "json" in members:
        entry = parse_record(members["json"], spec.limits.max_record_bytes)
        if isinstance(entry, BadRecord):
            return spec.reject(key, entry.reason, f"the .json member: {entry.detail}", file)
        caption = entry.get(spec.caption_column) if isinstance(entry, dict) else None
        if caption is None:
            return spec.reject(key, RejectReason.MALFORMED_RECORD, f"no {spec.caption_column!r} in the .json member",
                               file)
        if not isinstance(caption, str):
            return spec.reject(key, RejectReason.MALFORMED_RECORD, "the .json caption is not a string", file)
    else:
        return spec.reject(key, RejectReason.MALFORMED_RECORD, "no .txt or .json caption member", file)
    return SourceRecord(source=spec.source_name, file=file, key=key, caption=caption, image_ref=key, image_bytes=image)


def read(spec: SourceSpec) -> Iterator[Item]:
    store, names = _shards(spec)
    for name in names:
        file = store.url(name)
        with store.local_copy(name) as local:
            try:
                with tarfile.open(local) as archive:
                    for key, members in _grouped_members(archive, spec.limits.max_file_bytes):
                        yield _record(spec, file, f"{name}/{key}", members)
            except (tarfile.TarError, EOFError) as error:
                yield spec.reject(name, RejectReason.CORRUPT_ARCHIVE, f"unreadable from here on: {error}", file)


def count(spec: SourceSpec) -> int | None:
    """Keys in the local shards, from the tar headers alone; None for shards on S3 (that would mean a download)."""
    if is_remote(spec.path):
        return None
    store, names = _shards(spec)
    total = 0
    for name in names:
        keys: list[str] = []
        # A damaged tar is counted as far as it can be read; the conversion itself reports the damage.
        with contextlib.suppress(tarfile.TarError, EOFError), tarfile.open(store.url(name)) as archive:
            keys.extend(_split_name(member.name)[0] for member in archive if member.isfile())
        total += sum(1 for i, key in enumerate(keys) if i == 0 or key != keys[i - 1])
    return total
