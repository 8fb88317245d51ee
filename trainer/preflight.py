"""What a run needs before anything heavy starts, checked without torch: `trainer/main.py` refuses a run that
fails it, and the API refuses it with 422 before accepting it (one function, so the two cannot disagree).

Checked: that data.global_batch_size can be composed on the run's ranks (`resolve_batch`); that each
data split (data.train, data.eval) is an MDS dataset whose index.json declares, for every shard, exactly
dataprep's columns and encodings (`dataprep.schema.index_problems`), so no row of a dataset with other
decoders (`pkl` runs code when decoded) is ever read. Local splits are always checked; s3:// splits only
with `read_remote` (one GET of index.json through S3_ENDPOINT_URL); without it the trainer's loader checks
them once streaming has downloaded the index.
"""

from __future__ import annotations

import json
import logging
import os

from dataprep.schema import INDEX_NAME, index_problems
from dataprep.storage import is_remote, join, open_store
from trainer.config import ConfigError, RunConfig, resolve_batch

logger = logging.getLogger(__name__)

MAX_INDEX_BYTES = 64 << 20
"""An index.json larger than this is refused unread (streaming's own for 4M samples is a few MB)."""


def _index_bytes(location: str) -> bytes:
    """The split's index.json; FileNotFoundError when there is none, ValueError when it is not a plain file
    of a sane size (a FIFO, /dev/zero or a huge file would block or exhaust memory)."""
    if is_remote(location):
        return open_store(location).read_bytes(INDEX_NAME)
    path = os.path.join(location, INDEX_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if not os.path.isfile(path):
        raise ValueError("it is not a regular file")
    with open(path, "rb") as file:
        data = file.read(MAX_INDEX_BYTES + 1)
    if len(data) > MAX_INDEX_BYTES:
        raise ValueError(f"it is larger than {MAX_INDEX_BYTES} bytes")
    return data


def split_problems(key: str, location: str, *, read_remote: bool = False) -> list[str]:
    """Why the split at `location` cannot be trained on (one line each, naming `key`); empty when it can."""
    if is_remote(location) and not read_remote:
        return []
    index_path = join(location, INDEX_NAME)
    try:
        index = json.loads(_index_bytes(location))
    except FileNotFoundError:
        return [f"{key}: no MDS dataset at {location!r} (missing {index_path})"]
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        return [f"{key}: {index_path} is not an MDS index: {error}"]
    except Exception as error:  # an S3 endpoint or credentials problem: say so, the trainer checks again
        logger.warning("%s: cannot read %s (%s); not checked here", key, index_path, error)
        return []
    return [f"{key}: {problem}" for problem in index_problems(index)]


def preflight(cfg: RunConfig, *, world_size: int | None = None, read_remote: bool = False) -> list[str]:
    """Everything that would make the run fail at start-up on world_size ranks, one line each; empty when it
    can start. Without world_size the batch plan is not checked."""
    problems: list[str] = []
    if world_size is not None:
        try:
            resolve_batch(cfg, world_size)
        except ConfigError as error:
            problems.append(str(error))
    for key, location in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
        if location is not None and not location.strip():
            problems.append(f"{key}: an empty location; null (`{key}=` or `{key}=null`) switches a split off")
        elif location is not None:
            problems += split_problems(key, location, read_remote=read_remote)
    return problems
