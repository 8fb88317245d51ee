"""Hostile inputs made for real and cheaply: a decompression-bomb PNG, sparse files and tar members that
declare gigabytes, FIFOs, symlinks out of the image root."""

from __future__ import annotations

import io
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

from PIL import Image

from tests.dataprep.corpus import write_tar


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=95)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels, a few KB for hundreds of megapixels: rows are
    compressed as they are made, never held."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def sparse_file(path: Path, size: int, head: bytes = b"", tail: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk: head, a hole, tail."""
    with path.open("wb") as file:
        file.write(head)
        file.truncate(size - len(tail))
        file.seek(size - len(tail))
        file.write(tail)
    return path


def tar_with_sparse_member(path: Path, member: str, size: int) -> Path:
    """A tar of a few KB whose GNU sparse member declares `size` bytes (GNU tar writes the sparse map)."""
    folder = path.parent / f"{path.stem}-members"
    folder.mkdir()
    sparse_file(folder / member, size)
    subprocess.run(["tar", "--sparse", "-cf", str(path), "-C", str(folder), member], check=True)
    return path


def tar_declaring(path: Path, members: list[tuple[str, bytes]], member: str, declared: int, present: int) -> Path:
    """A tar of `members`, then one whose header declares `declared` bytes but which holds only `present`."""
    blocks = []
    for name, data in [*members, (member, b"\0" * present)]:
        info = tarfile.TarInfo(name)
        info.size = declared if name == member else len(data)
        blocks += [info.tobuf(format=tarfile.GNU_FORMAT), data, b"\0" * (-len(data) % tarfile.BLOCKSIZE)]
    path.write_bytes(b"".join(blocks))
    return path


def add_members(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Append regular members to a (new or existing uncompressed) tar."""
    write_tar(path, members, mode="a")
    return path
