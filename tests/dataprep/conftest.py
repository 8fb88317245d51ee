"""Fixtures: one real S3-compatible server (moto_server on loopback) for the session, a bucket per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from dataprep.storage import s3_client
from tests.s3_server import S3Server, start_moto_server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The server, with the process environment pointing boto3 and streaming at it while it runs."""
    with start_moto_server() as server:
        saved = {key: os.environ.get(key) for key in server.env}
        os.environ.update(server.env)
        s3_client.cache_clear()
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            s3_client.cache_clear()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh bucket's s3:// URL."""
    return s3_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
