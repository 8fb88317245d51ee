"""JSON sources read one record at a time: a JSON list (or the lists of a top-level object, as COCO has) is
scanned in chunks and each element parsed alone, so memory is bounded by the largest record kept, never by
the file (a 2 GB single-line file costs a chunk), and a record over the byte bound is skipped unparsed.

The scanner only tracks strings and bracket depth (structural bytes are ASCII, which never occur inside a
UTF-8 multi-byte sequence); `json.loads` parses each kept element. It has no recursion, so nesting only
costs the element that holds it (rejected as too deeply nested).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from dataprep.records import RejectReason

_CHUNK = 1 << 20
_STRUCTURE = re.compile(rb'["\[\]{},:]')
_STRING_END = re.compile(rb'["\\]')
_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_FLAT_OBJECT = re.compile(rb"\{(?:[^{}\[\]\"]++|%s|\[(?:[^{}\[\]\"]++|%s)*+\])*+\}" % (_STRING, _STRING), re.DOTALL)
"""An object whose values hold at most flat lists (what records look like): matched whole in one step."""
_SPACE = b" \t\r\n"
_MAX_KEY_BYTES = 4096


class JsonStreamError(ValueError):
    """The file is not the JSON it should be; the message says what and at which byte."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    """An element that cannot be a record, and why."""

    reason: RejectReason
    detail: str


def parse_record(data: bytes, max_bytes: int) -> Any:
    """One JSON value of at most max_bytes, or a BadRecord saying why not."""
    if len(data) > max_bytes:
        return BadRecord(RejectReason.RECORD_TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    try:
        return json.loads(data.decode("utf-8"))  # strictly UTF-8 (json.loads of bytes would guess UTF-16/32)
    except UnicodeDecodeError:
        return BadRecord(RejectReason.UNDECODABLE_TEXT, "the record holds bytes that are not UTF-8")
    except json.JSONDecodeError as error:
        return BadRecord(RejectReason.MALFORMED_RECORD, f"not JSON: {error}")
    except RecursionError:
        return BadRecord(RejectReason.TOO_DEEPLY_NESTED, "nested deeper than the parser's recursion limit")


def _string_end(buf: bytes, pos: int) -> re.Match[bytes] | None:
    """The next quote or backslash from pos: found with two memchr scans (a string may be gigabytes long),
    then matched in place so that the caller sees what a regex search would give."""
    quote = buf.find(b'"', pos)
    backslash = buf.find(b"\\", pos, len(buf) if quote < 0 else quote)
    first = backslash if backslash >= 0 else quote
    return _STRING_END.match(buf, first) if first >= 0 else None


class _Scanner:
    """A position in a binary file; keeps only the bytes from the start of the element being kept."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.buf = b""
        self.pos = 0
        self.base = 0
        """File offset of buf[0]."""
        self.keep: int | None = None
        """File offset from which bytes must stay in buf (None: only from pos)."""

    def _more(self) -> bool:
        chunk = self.file.read(_CHUNK)
        if not chunk:
            return False
        drop = self.pos if self.keep is None else min(self.pos, self.keep - self.base)
        self.buf = self.buf[drop:] + chunk
        self.base += drop
        self.pos -= drop
        return True

    def error(self, what: str) -> JsonStreamError:
        return JsonStreamError(f"{what} at byte {self.base + self.pos}")

    def peek(self) -> int | None:
        """The next byte that is not white space (not consumed), None at the end of the file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _SPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return None

    def expect(self, byte: bytes) -> None:
        if self.peek() != byte[0]:
            raise self.error(f"expected {byte.decode()!r}")
        self.pos += 1

    def value(self, max_bytes: int) -> bytes | int:
        """Consume one JSON value: its bytes when at most max_bytes long, else its length (nothing kept)."""
        if self.peek() is None:
            raise self.error("expected a value, found the end of the file")
        flat = _FLAT_OBJECT.match(self.buf, self.pos)
        if flat is not None and flat.end() - flat.start() <= max_bytes:  # the common case, without a token loop
            self.pos = flat.end()
            return flat.group()
        start = self.base + self.pos
        self.keep = start
        depth, in_string, end = 0, False, None
        while end is None:
            match = _string_end(self.buf, self.pos) if in_string else _STRUCTURE.search(self.buf, self.pos)
            if match is None:
                self.pos = len(self.buf)
                if not self._more():
                    if in_string or depth:
                        raise self.error("the file ends inside a value")
                    end = self.pos
            elif in_string and match.group() == b"\\":
                if match.end() >= len(self.buf):  # the escaped byte is in the next chunk
                    self.pos = match.start()
                    if not self._more():
                        raise self.error("the file ends inside a string")
                else:
                    self.pos = match.end() + 1
            elif match.group() == b'"':
                in_string = not in_string
                self.pos = match.end()
                end = self.pos if depth == 0 and not in_string else None
            elif match.group() in (b"[", b"{"):
                depth += 1
                self.pos = match.end()
            elif match.group() in (b"]", b"}") and depth:
                depth -= 1
                self.pos = match.end()
                end = self.pos if depth == 0 else None
            elif depth == 0:  # a , : ] or } that ends a scalar
                self.pos = match.start()
                end = self.pos
            else:
                self.pos = match.end()
            if self.keep is not None and self.base + self.pos - start > max_bytes:
                self.keep = None  # over the bound: stop keeping it, scan on to its end
        size = self.base + end - start
        kept = self.keep is not None and size <= max_bytes
        data = self.buf[start - self.base : end] if kept else size
        self.keep = None
        return data

    def elements(self, max_bytes: int) -> Iterator[Any]:
        """Each element of the array that starts here, parsed, or a BadRecord."""
        self.expect(b"[")
        if self.peek() == ord("]"):
            self.pos += 1
            return
        while True:
            data = self.value(max_bytes)
            if isinstance(data, int):
                yield BadRecord(RejectReason.RECORD_TOO_LARGE, f"{data} bytes > {max_bytes}")
            else:
                yield parse_record(data, max_bytes)
            following = self.peek()
            self.pos += 1
            if following == ord("]"):
                return
            if following != ord(","):
                self.pos -= 1
                raise self.error("expected ',' or ']' after a list element")

    def end(self) -> None:
        if self.peek() is not None:
            raise self.error("unexpected data after the JSON value")

    def start(self) -> int | None:
        """The first byte of the document (a UTF-8 byte order mark skipped)."""
        first = self.peek()
        if self.buf.startswith(b"\xef\xbb\xbf", self.pos):
            self.pos += 3
            first = self.peek()
        return first


def iter_array(file: BinaryIO, max_bytes: int) -> Iterator[Any]:
    """Each element of the JSON list that the file holds: the parsed value, or a BadRecord."""
    scanner = _Scanner(file)
    if scanner.start() != ord("["):
        raise scanner.error("expected a JSON list")
    yield from scanner.elements(max_bytes)
    scanner.end()


def iter_object_lists(file: BinaryIO, keys: frozenset[str], max_bytes: int) -> Iterator[tuple[str, Any]]:
    """(key, element) for each element of the lists under `keys` of the JSON object that the file holds, in
    file order; other members are skipped unparsed. A key of `keys` that is missing or not a list is an error."""
    scanner = _Scanner(file)
    if scanner.start() != ord("{"):
        raise scanner.error("expected a JSON object")
    scanner.pos += 1
    missing = set(keys)
    while scanner.peek() != ord("}"):
        raw = scanner.value(_MAX_KEY_BYTES)
        key = parse_record(raw, _MAX_KEY_BYTES) if isinstance(raw, bytes) else None
        if not isinstance(key, str):
            raise scanner.error("expected an object key")
        scanner.expect(b":")
        if key in keys:
            if scanner.peek() != ord("["):
                raise scanner.error(f"{key!r} is not a list")
            missing.discard(key)
            yield from ((key, element) for element in scanner.elements(max_bytes))
        else:
            scanner.value(0)
        if scanner.peek() == ord(","):
            scanner.pos += 1
        elif scanner.peek() != ord("}"):
            raise scanner.error("expected ',' or '}' after an object member")
    scanner.pos += 1
    scanner.end()
    if missing:
        raise scanner.error(f"no {sorted(missing)} list in the object")
