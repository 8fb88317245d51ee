"""A conversion killed mid-way (the whole process group, SIGKILL) and rerun gives the uninterrupted result."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataprep.convert import ConvertConfig, convert
from dataprep.images import ImageOptions
from dataprep.reader import DatasetError, iter_rows, load_manifest
from dataprep.schema import INDEX_NAME, MANIFEST_NAME, REJECTS_NAME
from dataprep.sources import SourceSpec
from dataprep.storage import open_store
from tests.dataprep.corpus import encode, picture
from tests.s3_server import S3Server

REPO = Path(__file__).resolve().parents[2]
BLOCKING = 13  # the record whose image is a FIFO: reading it blocks, so the run stops inside chunk 3
CHUNK = 4
WAIT_S = 120.0


def _corpus(root: Path) -> tuple[Path, bytes]:
    """20 records with a missing file, duplicates of a record in a finished chunk and of one in the cut
    chunk; the image of record BLOCKING is a FIFO. Returns the JSON path and that image's real bytes."""
    images = root / "images"
    images.mkdir(parents=True)
    entries = []
    for i in range(20):
        entries.append({"image": f"images/{i}.jpg", "caption": f"Record number {i}."})
        if i != BLOCKING:
            (images / f"{i}.jpg").write_bytes(encode(picture(i, 40 + i, 30), "JPEG"))
    entries[5]["image"] = "images/gone.jpg"
    (images / "5.jpg").unlink()
    entries[15] = {"image": "images/2.jpg", "caption": "record number 2"}  # duplicate of a finished chunk's row
    entries[17] = {"image": "images/14.jpg", "caption": "RECORD number 14"}  # duplicate within the cut chunk
    os.mkfifo(images / f"{BLOCKING}.jpg")
    path = root / "records.json"
    path.write_text(json.dumps(entries))
    return path, encode(picture(BLOCKING, 40 + BLOCKING, 30), "JPEG")


def _wait_for_object(s3_server: S3Server, url: str, process: subprocess.Popen) -> None:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the conversion ended (status {process.returncode}) before it was killed"
        if s3_server.client().list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0):
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not appear within {WAIT_S:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_killed_conversion_resumes_to_the_uninterrupted_result(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    records, blocked_image = _corpus(tmp_path / "corpus")
    out = f"{bucket}/killed"
    command = [
        sys.executable, "-m", "dataprep", "convert", out, "--source", f"format=albef_json,path={records},name=kill",
        "--workers", "2", "--batch-size", "1", "--chunk-size", str(CHUNK), "--max-short-side", "32",
    ]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_object(s3_server, f"{out}/.dataprep/chunks/train/chunk-00002.json", process)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone if the run ended by itself
            os.killpg(process.pid, signal.SIGKILL)  # the run and its workers, as a pod kill would
        process.wait()

    killed = open_store(out)
    assert not killed.exists(MANIFEST_NAME) and not killed.exists(INDEX_NAME), "a cut run must not look complete"
    assert not killed.exists(".dataprep/chunks/train/chunk-00003.json")
    with pytest.raises(DatasetError, match="not a finished dataprep dataset"):
        load_manifest(killed)

    image = tmp_path / "corpus" / "images" / f"{BLOCKING}.jpg"
    image.unlink()
    image.write_bytes(blocked_image)
    settings = {
        "sources": [SourceSpec(format="albef_json", path=str(records), name="kill")], "chunk_size": CHUNK,
        "images": ImageOptions(max_short_side=32), "workers": 1,
    }
    resumed = convert(ConvertConfig(out=out, **settings))
    reference = convert(ConvertConfig(out=str(tmp_path / "uninterrupted"), **settings))

    assert not resumed.already_complete
    assert resumed.datasets["train"].manifest == reference.datasets["train"].manifest
    assert resumed.datasets["train"].manifest.rejected == {"duplicate": 2, "missing_file": 1}
    assert list(iter_rows(killed)) == list(iter_rows(open_store(tmp_path / "uninterrupted")))
    assert killed.read_text(REJECTS_NAME) == open_store(tmp_path / "uninterrupted").read_text(REJECTS_NAME)
