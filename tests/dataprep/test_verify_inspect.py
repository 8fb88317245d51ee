"""`verify` catches changed or missing shards (local and on S3); `inspect` reports what a dataset holds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from dataprep.cli import main
from dataprep.reader import iter_rows
from dataprep.schema import MANIFEST_NAME
from dataprep.storage import open_store
from dataprep.verify import verify_dataset
from dataprep.writer import ChunkWriter, ShardOptions, finalize_dataset, write_dataset
from tests.dataprep.corpus import encode
from tests.s3_server import S3Server

SMALL_SHARDS = ShardOptions(size_limit=1 << 16)


def rows(count: int, words: list[int]) -> list[dict]:
    """Rows whose captions have the given word counts (cycled), with noise images of about 20 KiB."""
    noise = [Image.frombytes("RGB", (96, 96), random.Random(i).randbytes(96 * 96 * 3)) for i in range(count)]
    return [
        {"image": encode(image, "JPEG", quality=90), "caption": " ".join(["word"] * words[i % len(words)]),
         "sample_id": f"t:{i}", "source": "t", "width": 96, "height": 96}
        for i, image in enumerate(noise)
    ]


def test_verify_passes_then_catches_a_flipped_byte_and_a_missing_shard(tmp_path: Path) -> None:
    write_dataset(open_store(tmp_path), rows(40, [3]), SMALL_SHARDS, job="test")
    report = verify_dataset(str(tmp_path))
    assert report.ok and report.shards_checked >= 2, "the dataset should span several shards"

    shard = next(tmp_path.glob("chunk-00000/shard.00001.mds"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    report = verify_dataset(str(tmp_path))
    assert report.problems == ["chunk-00000/shard.00001.mds: sha256 mismatch (the file changed after it was written)"]
    assert main(["verify", str(tmp_path)]) == 1

    shard.unlink()
    assert verify_dataset(str(tmp_path)).problems == ["chunk-00000/shard.00001.mds: missing"]


def test_verify_on_s3_catches_a_replaced_object(s3_server: S3Server, bucket: str) -> None:
    location = f"{bucket}/ds"
    write_dataset(open_store(location), rows(10, [2]), SMALL_SHARDS, job="test")
    assert verify_dataset(location).ok
    client, name = s3_server.client(), bucket.removeprefix("s3://")
    key = "ds/chunk-00000/shard.00000.mds"
    body = bytearray(client.get_object(Bucket=name, Key=key)["Body"].read())
    body[-1] ^= 0xFF
    client.put_object(Bucket=name, Key=key, Body=bytes(body))
    assert [p.split(":")[0] for p in verify_dataset(location).problems] == ["chunk-00000/shard.00000.mds"]


def test_inspect_prints_counts_caption_statistics_and_examples(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_dataset(open_store(tmp_path), rows(4, [1, 2, 6]), SMALL_SHARDS, job="test")  # 1, 2, 6, 1 words
    assert main(["inspect", str(tmp_path), "--examples", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}: 4 samples in " in out
    assert "words per caption   1.0   2.5   6.0" in out  # mean (1 + 2 + 6 + 1) / 4
    assert "- t:0 (96x96): word\n- t:1 (96x96): word word\n" in out
    assert "- t:2" not in out


def test_unfinished_datasets_are_reported_not_crashed_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    writer = ChunkWriter(open_store(tmp_path), "chunk-00000", SMALL_SHARDS)
    for row in rows(3, [2]):
        writer.write(row)
    report = writer.finish()  # a finished chunk, but the dataset itself never finalised
    for command in ("inspect", "verify"):
        assert main([command, str(tmp_path)]) == 2
        assert "is not a finished dataprep dataset" in capsys.readouterr().err
    finalize_dataset(open_store(tmp_path), [report], job="test")
    assert (tmp_path / MANIFEST_NAME).exists() and main(["verify", str(tmp_path)]) == 0


def test_a_rewritten_chunk_drops_what_an_interrupted_attempt_left(tmp_path: Path) -> None:
    stale = tmp_path / "chunk-00000" / "shard.00007.mds"
    stale.parent.mkdir()
    stale.write_bytes(b"left by a killed run")
    writer = ChunkWriter(open_store(tmp_path), "chunk-00000", SMALL_SHARDS)
    writer.write(rows(1, [2])[0])
    report = writer.finish()
    assert not stale.exists()
    assert [s.basename for s in report.shards] == ["chunk-00000/shard.00000.mds"]


def test_compressed_shards_verify_and_read_back(tmp_path: Path) -> None:
    written = rows(6, [1, 3])
    manifest = write_dataset(open_store(tmp_path), written, ShardOptions(compression="zstd"), job="test")
    assert [s.basename for s in manifest.shards] == ["chunk-00000/shard.00000.mds.zstd"]
    assert verify_dataset(str(tmp_path)).ok
    assert [{k: row[k] for k in written[0]} for row in iter_rows(open_store(tmp_path))] == written
