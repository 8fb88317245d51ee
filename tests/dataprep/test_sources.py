"""Source readers: what they yield per format, and clear errors for sources that cannot be read at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataprep.records import Reject, SourceRecord
from dataprep.sources import SourceError, SourceSpec, count_source, read_source
from dataprep.split import assign_splits, is_held_out
from tests.dataprep.corpus import build_corpus, write_tar


def test_every_corpus_source_counts_what_it_yields(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path)
    yielded = 0
    for spec in corpus.sources:
        items = list(read_source(spec))
        assert count_source(spec) == len(items), spec.source_name
        yielded += len(items)
    # One item per record (a cut tar: its readable records and one reject), each accepted or rejected.
    assert yielded == len(corpus.rows) + len(corpus.rejects)


def test_records_carry_paths_keys_and_captions_as_written(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    entries = [{"image": "x/1.jpg", "caption": ["One.", "Two"]}, {"image": "/abs/2.jpg", "caption": "s"}]
    path.write_text(json.dumps(entries))
    first, second = read_source(SourceSpec(format="albef_json", path=str(path), image_root="/data",
                                           allow_outside_root=True))
    assert first == SourceRecord(source="a", file=str(path), key="0", caption=["One.", "Two"], image_ref="x/1.jpg",
                                 image_path="/data/x/1.jpg")
    assert second.image_path == "/abs/2.jpg" and second.sample_id == "a:1"
    _, outside = read_source(SourceSpec(format="albef_json", path=str(path), image_root="/data"))  # the default
    assert (outside.key, outside.reason) == ("1", "outside_image_root")


def test_csv_with_a_byte_order_mark_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes('\ufeffimage,caption\na.jpg,"two\nlines"\nb.jpg,plain\n'.encode())
    items = list(read_source(SourceSpec(format="csv", path=str(path))))
    assert [(i.key, i.caption, i.image_ref) for i in items] == [("3", "two\nlines", "a.jpg"), ("4", "plain", "b.jpg")]


@pytest.mark.parametrize(
    ("fmt", "content", "message"),
    [
        ("csv", "path,text\na.jpg,x\n", r"no column \['image', 'caption'\]"),
        ("tsv", "", "empty file"),
        ("albef_json", '{"image": "a.jpg"}', "expected a JSON list"),
        ("albef_json", '[{"image": "a.jpg", ', "the file ends inside a value at byte 20"),
        ("coco", "[]", "COCO captions file"),
    ],
)
def test_unreadable_sources_fail_with_a_clear_error(tmp_path: Path, fmt: str, content: str, message: str) -> None:
    path = tmp_path / "source"
    path.write_text(content)
    with pytest.raises(SourceError, match=message):
        list(read_source(SourceSpec(format=fmt, path=str(path))))


@pytest.mark.parametrize("fmt", ["albef_json", "coco", "csv", "jsonl", "webdataset"])
def test_a_missing_source_fails_with_its_path(tmp_path: Path, fmt: str) -> None:
    missing = tmp_path / ("nothing.tar" if fmt == "webdataset" else "nothing")
    with pytest.raises(SourceError, match="nothing"):
        count_source(SourceSpec(format=fmt, path=str(missing)))


def test_webdataset_groups_adjacent_members_and_reads_json_captions(tmp_path: Path) -> None:
    write_tar(tmp_path / "s.tar", [
        ("d/k1.jpg", b"img1"), ("d/k1.json", json.dumps({"text": "from json"}).encode()),
        ("d/k2.txt", b"caption two"), ("d/k2.png", b"img2"), ("d/k3.json", b"{}"),
    ])
    spec = SourceSpec(format="webdataset", path=str(tmp_path / "s.tar"), caption_column="text")
    k1, k2, k3 = read_source(spec)
    assert (k1.key, k1.caption, k1.image_bytes) == ("s.tar/d/k1", "from json", b"img1")
    assert (k2.key, k2.caption, k2.image_bytes) == ("s.tar/d/k2", "caption two", b"img2")
    assert isinstance(k3, Reject) and k3.key == "s.tar/d/k3"


def test_held_out_split_takes_about_the_fraction_and_keeps_images_whole(tmp_path: Path) -> None:
    held = [is_held_out("src", f"img{i}.jpg", 0.2, seed=0) for i in range(2000)]
    assert 0.16 < sum(held) / len(held) < 0.24
    assert held == [is_held_out("src", f"img{i}.jpg", 0.2, seed=0) for i in range(2000)]
    assert not any(is_held_out("src", f"img{i}.jpg", 0.0, seed=0) for i in range(2000))

    path = tmp_path / "r.json"
    entries = [{"image": f"{i % 5}.jpg", "caption": f"caption {i}"} for i in range(20)]
    path.write_text(json.dumps(entries))
    assigned = list(assign_splits([SourceSpec(format="albef_json", path=str(path))], 0.5, seed=1))
    train_images = {item.image_ref for split, item, _ in assigned if split == "train"}
    evals = [(item, weight) for split, item, weight in assigned if split == "eval"]
    assert train_images and evals
    assert not train_images & {item.image_ref for item, _ in evals}
    for item, weight in evals:  # image i % 5 has captions i, i + 5, i + 10, i + 15, grouped in source order
        first = int(item.image_ref.removesuffix(".jpg"))
        assert item.caption == [f"caption {first + 5 * k}" for k in range(4)] and weight == 4
    assert sum(weight for _, _, weight in assigned) == len(entries)
