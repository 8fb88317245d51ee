"""A real S3-compatible server for tests: `moto_server` as a separate process on loopback.

A separate process (not an in-process mock) so that every worker, rank and subprocess of a test
reaches the same endpoint through the ordinary boto3 / mosaicml-streaming code paths.

    with start_moto_server() as server:
        os.environ.update(server.env)
        server.create_bucket("data")
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    """Where a started server listens, and the environment that points boto3 and streaming at it."""

    endpoint_url: str

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables plus `S3_ENDPOINT_URL` (what mosaicml-streaming reads)."""
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (botocore builds its class at run time: no static type)."""
        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env["AWS_SESSION_TOKEN"],
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket and return its `s3://` URL."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_server_command() -> list[str]:
    """`moto_server` from the running interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).with_name("moto_server")
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")
    return [found]


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode} before it served {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered, even if with an error status
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {url} within {_START_TIMEOUT_S:.0f} s")


@contextmanager
def start_moto_server() -> Iterator[S3Server]:
    """Start `moto_server -H 127.0.0.1 -p <free port>`, wait until it answers, stop it on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
    )
    try:
        _wait_until_up(url, process)
        yield S3Server(endpoint_url=url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
