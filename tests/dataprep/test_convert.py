"""Conversions end to end: every format with planted faults, to a real S3 server and to local folders."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from dataprep.convert import ConvertConfig, convert
from dataprep.images import ImageOptions
from dataprep.job import JOB_FILE, JobError
from dataprep.reader import iter_rows
from dataprep.schema import COLUMNS, MANIFEST_NAME, REJECTS_NAME, Manifest
from dataprep.storage import open_store
from dataprep.verify import verify_dataset
from dataprep.writer import ShardOptions
from tests.dataprep.corpus import MAX_SHORT_SIDE, Corpus, build_corpus, mean_abs_diff
from tests.s3_server import S3Server

JPEG_TOLERANCE = 6.0  # mean absolute difference (0-255) allowed for a re-encoded JPEG


def config(corpus: Corpus, out: str, **overrides: object) -> ConvertConfig:
    settings: dict[str, object] = {
        "out": out, "sources": corpus.sources, "images": ImageOptions(max_short_side=MAX_SHORT_SIDE),
        "workers": 1, "chunk_size": 7, "batch_size": 4, "shards": ShardOptions(size_limit=1 << 16),
    }
    return ConvertConfig(**{**settings, **overrides})


def assert_rows_match(rows: list[dict], corpus: Corpus) -> None:
    """Every accepted record, and nothing else, with its caption, size and picture."""
    by_id = {row["sample_id"]: row for row in rows}
    assert len(by_id) == len(rows), "sample ids must be unique"
    assert sorted(by_id) == sorted(corpus.rows)
    for sample_id, expected in corpus.rows.items():
        row = by_id[sample_id]
        assert row["caption"] == expected.caption, sample_id
        assert row["source"] == sample_id.split(":")[0]
        assert (row["width"], row["height"]) == expected.size, sample_id
        stored = Image.open(io.BytesIO(row["image"]))
        assert (stored.format, stored.mode, stored.size) == ("JPEG", "RGB", expected.size), sample_id
        if expected.source_bytes is not None:
            assert row["image"] == expected.source_bytes, f"{sample_id}: source bytes were not kept"
        reference = expected.picture.resize(expected.size, Image.Resampling.BILINEAR)
        assert mean_abs_diff(stored, reference) < JPEG_TOLERANCE, sample_id


def rejects_of(location: str) -> set[tuple[str, str, str]]:
    lines = open_store(location).read_text(REJECTS_NAME).splitlines()
    return {(r["source"], r["key"], r["reason"]) for r in map(json.loads, lines)}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_every_format_to_s3_and_back_through_streaming(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    from streaming import StreamingDataset

    corpus = build_corpus(tmp_path / "corpus", s3_prefix=f"{bucket}/corpora/wds")
    client = s3_server.client()
    name = bucket.removeprefix("s3://")
    for shard in ("00000.tar", "00001.tar"):
        client.upload_file(str(tmp_path / "corpus" / "wds" / shard), name, f"corpora/wds/{shard}")
    out = f"{bucket}/converted"

    result = convert(config(corpus, out, workers=2))

    manifest = result.datasets["train"].manifest
    assert manifest.samples == len(corpus.rows)
    assert manifest.rejected == dict(Counter(reason for _, _, reason in corpus.rejects))
    assert manifest.columns == COLUMNS
    assert rejects_of(out) == corpus.rejects
    for shard in manifest.shards:  # the manifest's hashes are those of the objects as stored
        body = client.get_object(Bucket=name, Key=f"converted/{shard.basename}")["Body"].read()
        assert (hashlib.sha256(body).hexdigest(), len(body)) == (shard.sha256, shard.bytes)

    dataset = StreamingDataset(remote=out, local=str(tmp_path / "cache"), shuffle=False, batch_size=1)
    rows = [dataset[i] for i in range(dataset.num_samples)]
    assert_rows_match(rows, corpus)
    assert verify_dataset(out).ok


def test_local_conversion_matches_the_sources_and_a_rerun_does_nothing(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    first = convert(config(corpus, str(out)))
    assert not first.already_complete and first.reject_limit_error is None
    assert_rows_match(list(iter_rows(open_store(out))), corpus)
    assert rejects_of(str(out)) == corpus.rejects

    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = convert(config(corpus, str(out)))
    assert again.already_complete
    assert again.datasets["train"].manifest == first.datasets["train"].manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files, "a finished job must not be touched"

    (out / "chunk-00000" / "stray-file").write_text("left by hand")
    fresh = convert(config(corpus, str(out), overwrite=True))
    assert not fresh.already_complete
    assert not (out / "chunk-00000" / "stray-file").exists()
    assert fresh.datasets["train"].manifest == first.datasets["train"].manifest


@pytest.mark.slow
def test_two_workers_write_the_same_shards_as_one(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus")
    one = convert(config(corpus, str(tmp_path / "one"), workers=1, batch_size=3))
    two = convert(config(corpus, str(tmp_path / "two"), workers=2, batch_size=1))
    assert one.datasets["train"].manifest == two.datasets["train"].manifest


def test_other_settings_or_foreign_folders_are_refused(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    convert(config(corpus, str(out)))
    manifest = (out / MANIFEST_NAME).read_bytes()
    with pytest.raises(JobError, match="other settings"):
        convert(config(corpus, str(out), chunk_size=5))
    assert (out / MANIFEST_NAME).read_bytes() == manifest, "a refused run must leave the output as it was"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("not ours")
    for overwrite in (False, True):
        with pytest.raises(JobError, match="not written by dataprep"):
            convert(config(corpus, str(foreign), overwrite=overwrite))
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]


def test_held_out_split_is_by_image_with_its_captions_grouped(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus")
    result = convert(config(corpus, str(tmp_path / "split"), eval_fraction=0.5, seed=3))
    train = list(iter_rows(open_store(result.datasets["train"].location)))
    evals = list(iter_rows(open_store(result.datasets["eval"].location)))
    assert train and evals
    assert all(isinstance(row["caption"], list) for row in evals)

    # The retrieval-train source has each of 3 images twice (captions 1 and 2, entries i and i + 3).
    train_ids = {row["sample_id"] for row in train}
    eval_by_id = {row["sample_id"]: row for row in evals}
    for i in range(3):
        held = eval_by_id.get(f"rtrain:images/ret{i}.jpg")
        in_train = {f"rtrain:{i}", f"rtrain:{i + 3}"} & train_ids
        if held is None:
            assert in_train == {f"rtrain:{i}", f"rtrain:{i + 3}"}
        else:
            assert not in_train, "an image's records must all land in one split"
            assert held["caption"] == [f"picture {i} caption 1", f"picture {i} caption 2"]

    # Every accepted record is somewhere: as its own train row, or inside its image's eval row.
    held_captions = Counter(c for row in evals for c in row["caption"])
    for sample_id, expected in corpus.rows.items():
        captions = [expected.caption] if isinstance(expected.caption, str) else expected.caption
        if sample_id not in train_ids:
            for caption in captions:
                assert held_captions[caption] >= 1, sample_id

    again = convert(config(corpus, str(tmp_path / "split-again"), eval_fraction=0.5, seed=3))
    assert again.datasets["eval"].manifest == result.datasets["eval"].manifest
    other_seeds = [
        {r["sample_id"] for r in iter_rows(open_store(convert(
            config(corpus, str(tmp_path / f"seed{seed}"), eval_fraction=0.5, seed=seed)
        ).datasets["eval"].location))}
        for seed in (4, 5)
    ]
    assert any(ids != set(eval_by_id) for ids in other_seeds), "the seed must change the split"


def test_reject_limits_decide_the_exit_status_after_writing_everything(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus")
    rejected, total = len(corpus.rejects), len(corpus.rejects) + len(corpus.rows)
    within = convert(config(corpus, str(tmp_path / "a"), max_reject_count=rejected,
                            max_reject_fraction=rejected / total))
    assert within.reject_limit_error is None
    over_count = convert(config(corpus, str(tmp_path / "b"), max_reject_count=rejected - 1))
    assert f"{rejected} records rejected" in over_count.reject_limit_error
    assert Manifest.model_validate_json((tmp_path / "b" / MANIFEST_NAME).read_bytes()).samples == len(corpus.rows)
    over_fraction = convert(config(corpus, str(tmp_path / "c"), max_reject_fraction=0.9 * rejected / total))
    assert f"{rejected} of {total} records rejected" in over_fraction.reject_limit_error


def test_worker_and_batch_counts_are_not_part_of_the_job(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus")
    out = str(tmp_path / "out")
    convert(config(corpus, out, workers=1, batch_size=4))
    assert convert(config(corpus, out, workers=3, batch_size=9)).already_complete
    assert "workers" not in json.loads((tmp_path / "out" / JOB_FILE).read_text())
