"""Bounds on what one untrusted input record may cost: past one, the record is rejected with its own reason.

Sources are read in the converting process and records decoded in workers; without bounds one hostile
record (a 100 GB sparse tar member, a 2 GB single-line JSON, a FIFO named as an image) would stop or
exhaust the whole job. The pixel bound lives with the image options (`ImageOptions.max_pixels`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from dataprep.images import ImageRejected
from dataprep.records import RejectReason


class Limits(BaseModel):
    """Per-record bounds of a conversion (the defaults leave every real corpus we know untouched)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_file_bytes: int = Field(64 << 20, ge=1)
    """An image file or a tar member larger than this is rejected (its declared size is checked before reading)."""
    max_record_bytes: int = Field(1 << 20, ge=16)
    """One JSON record (an entry of a JSON list, a JSONL line, a WebDataset .json member)."""
    max_caption_bytes: int = Field(16 << 10, ge=1)
    """One caption, in UTF-8 bytes, before cleaning."""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes; ImageRejected otherwise.

    Opened without blocking (a FIFO without a writer would wait forever) and checked on the open descriptor
    (what is read is what was checked), then read to at most max_bytes + 1 (a file that grows is caught too).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageRejected(RejectReason.MISSING_FILE, f"no file at {path}") from None
    except OSError as error:
        raise ImageRejected(RejectReason.UNREADABLE_FILE, f"{path}: {error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageRejected(RejectReason.NOT_A_FILE, f"{path} is {_kind(info.st_mode)}")
        if info.st_size > max_bytes:
            raise ImageRejected(RejectReason.FILE_TOO_LARGE, f"{path}: {info.st_size} bytes > {max_bytes}")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise ImageRejected(RejectReason.UNREADABLE_FILE, f"{path}: {error}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageRejected(RejectReason.FILE_TOO_LARGE, f"{path}: more than {max_bytes} bytes")
    return data


def inside(path: str, root: str) -> str | None:
    """The symlink-free form of path if it lies under root (itself resolved), else None."""
    real = Path(os.path.realpath(path))
    return str(real) if real.is_relative_to(os.path.realpath(root)) else None


def bounded_lines(file: BinaryIO, max_bytes: int) -> Iterator[bytes | int]:
    """Each line (with its newline) of at most max_bytes plus the newline, or the length of a longer one, skipped
    unread: a line-based source reads a file without newlines (2 GB on one line) in bounded memory."""
    while line := file.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line
            continue
        length = len(line)
        while (rest := file.readline(1 << 20)) and not rest.endswith(b"\n"):
            length += len(rest)
        yield length + len(rest.rstrip(b"\r\n"))
