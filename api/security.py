"""Secrets and confinement: token hashing, path roots, and a log filter that hides tokens."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from posixpath import normpath
from urllib.parse import unquote, urlparse


class PathNotAllowed(ValueError):
    """A path in a request lies outside the configured roots, or uses a scheme that is not accepted."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the store keeps of a run token."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def confine(value: str, roots: Iterable[Path], *, workdir: Path, allow_s3: bool, what: str) -> str:
    """The absolute, symlink-free form of a local path under one of `roots`; s3:// passes when allowed."""
    roots = list(roots)
    if "://" in value:
        if allow_s3 and value.startswith("s3://"):
            return value
        accepted = "local paths and s3:// URIs" if allow_s3 else "local paths"
        raise PathNotAllowed(f"{what}: {value!r} is not accepted (only {accepted})")
    path = (workdir / Path(value).expanduser()).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise PathNotAllowed(f"{what}: {value!r} resolves to {path}, outside the allowed roots: "
                             + ", ".join(str(r) for r in roots))
    return str(path)


def checkpoint_uri_outside(uri: str, output_dir: str) -> str | None:
    """Why a checkpoint URI is refused for a run writing to `output_dir`, or None: file:// URIs must name a
    path under a local output_dir, s3:// URIs a key under an s3:// one (`..` and `.` are resolved first)."""
    parsed = urlparse(uri)
    if output_dir.startswith("s3://"):
        root = output_dir.rstrip("/")
        key = normpath(unquote(parsed.path)) if parsed.scheme == "s3" else ""
        inside = parsed.scheme == "s3" and f"s3://{parsed.netloc}{key}".startswith(root + "/")
    else:
        path = normpath(unquote(parsed.path)) if parsed.scheme == "file" and parsed.netloc in ("", "localhost") else ""
        inside = bool(path) and Path(path).is_relative_to(output_dir) and path != normpath(output_dir)
    if inside:
        return None
    return f"checkpoint uri {uri!r} is not under the run's output location {output_dir!r}"


class RedactSecrets(logging.Filter):
    """Replaces bearer tokens and the given secret values in log records with ***."""

    _BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        super().__init__()
        self._values = [v for v in secret_values if v]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._BEARER.sub(r"\1***", message)
        for value in self._values:
            redacted = redacted.replace(value, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
