"""Where checkpoint files live, behind one small interface: put, get, list, delete.

Ranks always write into a local folder (DeepSpeed writes files, not streams). `LocalStorage` is that
folder itself, on a shared filesystem or on each node's own disk: `put` makes a written file durable
(fsync of the file and its folder). `S3Storage` is a bucket prefix on any S3 endpoint: the local folder
is a per-node staging area, `put` uploads, `get` downloads only the file asked for.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from trainer.checkpoint.layout import fsync_dir, fsync_file


class Storage(Protocol):
    """Keys are '/'-separated paths relative to the storage's root."""

    def put(self, local: Path, key: str) -> None:
        """Store the local file under key, durably (a local file: in place)."""

    def get(self, key: str, local: Path) -> None:
        """Make the file of key present at `local` (raises FileNotFoundError when there is none)."""

    def list(self, prefix: str = "") -> dict[str, int]:
        """key -> size in bytes of every file under prefix."""

    def delete(self, prefix: str) -> None:
        """Delete every file under prefix."""

    def uri(self, key: str = "") -> str:
        """The key's address for people and the control plane (file:// or s3://)."""


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


class LocalStorage:
    """A folder on a filesystem: the place ranks write is the store."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, local: Path, key: str) -> None:
        dest = self.root / key
        if Path(local).resolve() != dest.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(local, tmp)
            os.replace(tmp, dest)
        fsync_file(dest)
        fsync_dir(dest.parent)

    def get(self, key: str, local: Path) -> None:
        src = self.root / key
        if not src.is_file():
            raise FileNotFoundError(f"{src} does not exist")
        if src.resolve() != Path(local).resolve():
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, local)

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self.root / prefix
        if base.is_file():
            return {prefix: base.stat().st_size}
        out = {}
        for dirpath, _, filenames in os.walk(base):
            for name in filenames:
                if name.startswith("."):  # temp files of an unfinished write
                    continue
                path = Path(dirpath) / name
                try:
                    out[path.relative_to(self.root).as_posix()] = path.stat().st_size
                except FileNotFoundError:  # removed while listing (pruned by another process)
                    continue
        return out

    def delete(self, prefix: str) -> None:
        path = self.root / prefix
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def uri(self, key: str = "") -> str:
        return (self.root / key).resolve().as_uri()


class S3Storage:
    """s3://bucket/prefix on the endpoint of S3_ENDPOINT_URL (AWS's when unset), credentials as boto3 finds them."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)
        self.client = client

    def _key(self, key: str) -> str:
        return "/".join(part for part in (self.prefix, key.strip("/")) if part)

    def put(self, local: Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(key))

    def get(self, key: str, local: Path) -> None:
        from botocore.exceptions import ClientError

        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.part")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp))
        except ClientError as err:
            tmp.unlink(missing_ok=True)
            if err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                raise FileNotFoundError(f"{self.uri(key)} does not exist") from None
            raise
        os.replace(tmp, local)

    def list(self, prefix: str = "") -> dict[str, int]:
        root = self._key("")
        folder = (not prefix or prefix.endswith("/")) and (root or prefix)
        full = self._key(prefix) + ("/" if folder else "")
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(root) + 1:] if root else obj["Key"]
                out[key] = int(obj["Size"])
        return out

    def delete(self, prefix: str) -> None:
        keys = [self._key(k) for k in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"
