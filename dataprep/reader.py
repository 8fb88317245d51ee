"""Read a finished dataset back without a training loader: manifest, index, rows (for inspect and verify)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import numpy as np
from pydantic import ValidationError
from streaming.base.compression import decompress
from streaming.base.format.mds import MDSReader

from dataprep.schema import INDEX_NAME, MANIFEST_NAME, Manifest, index_problems
from dataprep.storage import Store


class DatasetError(RuntimeError):
    """The location holds no finished dataprep dataset."""


def load_manifest(dataset: Store) -> Manifest:
    try:
        return Manifest.model_validate_json(dataset.read_bytes(MANIFEST_NAME))
    except FileNotFoundError:
        raise DatasetError(
            f"{dataset.url(MANIFEST_NAME)} does not exist: {dataset.uri} is not a finished dataprep dataset "
            "(still being written, interrupted, or not written by dataprep)"
        ) from None
    except ValidationError as error:
        raise DatasetError(f"{dataset.url(MANIFEST_NAME)} is not a dataprep manifest: {error}") from None


def load_index(dataset: Store) -> list[dict[str, Any]]:
    """The shard entries of the dataset's merged index.json, once every shard's columns are checked to be
    exactly dataprep's (nothing of a dataset that declares other decoders is ever decoded)."""
    try:
        index = json.loads(dataset.read_bytes(INDEX_NAME))
    except FileNotFoundError:
        raise DatasetError(f"{dataset.url(INDEX_NAME)} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{dataset.url(INDEX_NAME)} is not JSON: {error}") from None
    problems = index_problems(index)
    if problems:
        raise DatasetError("\n".join(f"{dataset.url(INDEX_NAME)}: {problem}" for problem in problems))
    return index["shards"]


def stored_basename(shard: dict[str, Any]) -> str:
    """The file of an index entry as it lies in storage (the compressed one when compressed)."""
    return (shard["zip_data"] or shard["raw_data"])["basename"]


def _shard_rows(shard: dict[str, Any], data: bytes) -> Iterator[dict[str, Any]]:
    if shard["zip_data"]:
        data = decompress(shard["compression"], data)
    reader = MDSReader.from_json("", None, shard)
    count = int(np.frombuffer(data, np.uint32, count=1)[0])
    offsets = np.frombuffer(data, np.uint32, count=count + 1, offset=4)
    for begin, end in pairwise(offsets):
        yield reader.decode_sample(data[begin:end])


def iter_rows(dataset: Store) -> Iterator[dict[str, Any]]:
    """Every row in dataset order, one shard at a time (a remote shard is fetched whole)."""
    for shard in load_index(dataset):
        yield from _shard_rows(shard, dataset.read_bytes(stored_basename(shard)))
