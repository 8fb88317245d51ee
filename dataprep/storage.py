"""A folder on local disk or under `s3://bucket/prefix`, with the few operations dataprep needs.

S3 means any S3-compatible endpoint (AWS, MinIO, Ceph): the endpoint comes from `S3_ENDPOINT_URL`
(what mosaicml-streaming reads too), region and credentials from the standard AWS variables. Every
request retries transient errors with exponential backoff (botocore's "standard" retry mode).
Writes are all-or-nothing: a local file appears by rename, an S3 object by a single PUT.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

S3_SCHEME = "s3://"
_S3_ATTEMPTS = 10


@cache
def s3_client() -> Any:
    """A boto3 S3 client for `S3_ENDPOINT_URL` (or AWS when unset), with retries and backoff."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": _S3_ATTEMPTS})
    return boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None, config=config)


def is_remote(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URL with '/'."""
    return "/".join([uri.rstrip("/"), *(part.strip("/") for part in parts if part)])


class Store(ABC):
    """A folder; paths given to its methods are relative to it ('a/b.json')."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/") or "/"

    def url(self, path: str = "") -> str:
        return join(self.uri, path)

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """The file's bytes; FileNotFoundError if it is not there."""

    @abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Create or replace the file in one step (never half-written)."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of every file below prefix, sorted."""

    @abstractmethod
    def delete_tree(self, prefix: str = "") -> None:
        """Delete every file below prefix (the whole folder when prefix is '')."""

    @abstractmethod
    def local_copy(self, path: str) -> AbstractContextManager[Path]:
        """The file as a local path while the context lasts (a temporary download for a remote file)."""

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalStore(Store):
    def _path(self, path: str) -> Path:
        return Path(self.uri, path) if path else Path(self.uri)

    def read_bytes(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def list(self, prefix: str = "") -> list[str]:
        root = Path(self.uri)
        base = self._path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete_tree(self, prefix: str = "") -> None:
        target = self._path(prefix)
        if target.is_dir():
            for child in target.iterdir():  # keep the folder itself: it may be a mount point
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        elif target.exists():
            target.unlink()

    @contextmanager
    def local_copy(self, path: str) -> Iterator[Path]:
        yield self._path(path)


class S3Store(Store):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        bucket, _, prefix = uri[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket: expected s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _key(self, path: str) -> str:
        return "/".join(part for part in (self.prefix, path.strip("/")) if part)

    def read_bytes(self, path: str) -> bytes:
        client = s3_client()
        try:
            return client.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(self.url(path)) from None

    def write_bytes(self, path: str, data: bytes) -> None:
        s3_client().put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def exists(self, path: str) -> bool:
        client = s3_client()
        try:
            client.head_object(Bucket=self.bucket, Key=self._key(path))
        except client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _keys(self, prefix: str) -> list[str]:
        key_prefix = self._key(prefix)
        if key_prefix and not key_prefix.endswith("/") and not self.exists(prefix):
            key_prefix += "/"  # a folder: do not match siblings that merely share the name's start
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def list(self, prefix: str = "") -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(key[strip:] for key in self._keys(prefix))

    def delete_tree(self, prefix: str = "") -> None:
        keys = self._keys(prefix)
        for start in range(0, len(keys), 1000):  # the DeleteObjects limit
            objects = [{"Key": key} for key in keys[start : start + 1000]]
            s3_client().delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})

    @contextmanager
    def local_copy(self, path: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="dataprep-") as folder:
            local = Path(folder, PurePosixPath(path).name)
            s3_client().download_file(self.bucket, self._key(path), str(local))  # retries, unlike a stream
            yield local


def open_store(uri: str | Path) -> Store:
    """The Store for a local folder or an s3://bucket/prefix URL."""
    uri = str(uri)
    return S3Store(uri) if is_remote(uri) else LocalStore(uri)
