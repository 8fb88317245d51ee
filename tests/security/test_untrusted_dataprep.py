"""dataprep reads corpora it did not write: each hostile record below is rejected with its own reason in the
reject report while the job converts the others (before these bounds, each of them crashed the job, hung
it, or made it read gigabytes). Every input is real: FIFOs, devices, symlinks, sparse files, a
decompression-bomb PNG, sparse and lying tar members, a 2 GB single-line JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dataprep.convert import ConvertConfig, convert
from dataprep.reader import iter_rows
from dataprep.schema import REJECTS_NAME
from dataprep.sources import SourceSpec
from dataprep.storage import open_store
from tests.security.hostile_inputs import (
    add_members,
    bomb_png,
    jpeg,
    sparse_file,
    tar_declaring,
    tar_with_sparse_member,
)

pytestmark = pytest.mark.timeout(120)
GB = 1 << 30


def run(out: Path, *sources: SourceSpec, **options: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Convert in this process; (sample id -> row, key -> reject reason) of the dataset."""
    result = convert(ConvertConfig(out=str(out), sources=list(sources), workers=1, **options))
    dataset = open_store(result.datasets["train"].location)
    rows = {row["sample_id"]: row for row in iter_rows(dataset)}
    rejects = [json.loads(line) for line in dataset.read_text(REJECTS_NAME).splitlines()]
    return rows, {f"{r['source']}:{r['key']}": r["reason"] for r in rejects}


def write_json_list(path: Path, entries: list[str]) -> Path:
    path.write_text("[" + ", ".join(entries) + "]")
    return path


def entry(image: str, caption: str = "a red square") -> str:
    return json.dumps({"image": image, "caption": caption})


def test_file_references_are_bounded(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.jpg").write_bytes(jpeg((200, 0, 0)))
    (images / "good2.jpg").write_bytes(jpeg((0, 200, 0)))
    (tmp_path / "outside.jpg").write_bytes(jpeg((0, 0, 200)))
    (images / "link-out.jpg").symlink_to(tmp_path / "outside.jpg")
    (images / "link-in.jpg").symlink_to(images / "good2.jpg")
    os.mkfifo(images / "fifo.jpg")  # reading it would wait for a writer forever
    (images / "dir.jpg").mkdir()
    sparse_file(images / "huge.jpg", 100 << 20, head=jpeg((9, 9, 9)))  # 100 MB on no disk
    (images / "bomb.png").write_bytes(bomb_png(12_000))  # 144 megapixels, about 20 KB
    deep = '{"image": "good.jpg", "caption": ' + "[" * 100_000 + "]" * 100_000 + "}"
    corpus = write_json_list(tmp_path / "corpus.json", [
        entry("good.jpg"), entry("../outside.jpg"), entry(str(tmp_path / "outside.jpg")), entry("link-out.jpg"),
        entry("link-in.jpg"), entry("fifo.jpg"), entry("dir.jpg"), entry("huge.jpg"), entry("bomb.png"),
        entry("good2.jpg", "x" * 20_000), deep,
    ])
    devices = write_json_list(tmp_path / "devices.json", [entry("/dev/zero"), entry("../outside.jpg")])
    rows, rejects = run(
        tmp_path / "out",
        SourceSpec(format="albef_json", path=str(corpus), image_root=str(images)),
        SourceSpec(format="albef_json", path=str(devices), image_root=str(images), allow_outside_root=True),
    )
    assert sorted(rows) == ["corpus:0", "corpus:4", "devices:1"]  # the symlink inside; outside when allowed
    assert rejects == {
        "corpus:1": "outside_image_root", "corpus:2": "outside_image_root", "corpus:3": "outside_image_root",
        "corpus:5": "not_a_regular_file", "corpus:6": "not_a_regular_file", "corpus:7": "file_too_large",
        "corpus:8": "too_many_pixels", "corpus:9": "caption_too_long", "corpus:10": "too_deeply_nested",
        "devices:0": "not_a_regular_file",
    }


def test_the_pixel_and_byte_caps_are_options(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg((200, 0, 0), (64, 48)))
    corpus = write_json_list(tmp_path / "c.json", [entry("a.jpg")])
    spec = SourceSpec(format="albef_json", path=str(corpus))
    _, rejects = run(tmp_path / "pixels", spec, images={"max_pixels": 64 * 48 - 1})
    assert rejects == {"c:0": "too_many_pixels"}
    _, rejects = run(tmp_path / "bytes", spec, limits={"max_file_bytes": 100})
    assert rejects == {"c:0": "file_too_large"}


def test_a_2gb_single_line_json_is_streamed(tmp_path: Path) -> None:
    """The middle record is one 2 GB string (a hole in a sparse file): it is skipped unread, in bounded memory."""
    for name, colour in (("a.jpg", (200, 0, 0)), ("c.jpg", (0, 0, 200))):
        (tmp_path / name).write_bytes(jpeg(colour))
    opening, closing = b'{"image": "b.jpg", "caption": "', b'"}'
    head = f'[{entry("a.jpg", "first")}, '.encode() + opening
    tail = closing + f', {entry("c.jpg", "last")}]'.encode()
    record_bytes = 2 * GB - (len(head) - len(opening)) - (len(tail) - len(closing))
    corpus = sparse_file(tmp_path / "huge.json", 2 * GB, head, tail)
    out = tmp_path / "out"
    # The peak resident memory of a converting process, after its imports (torch comes with streaming) and after
    # the conversion: json.load of the file would need more than 4 GB on top.
    script = ("import resource, sys; import dataprep.convert; from dataprep.cli import main; "
              "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; before = peak(); "
              "rc = main(sys.argv[1:]); print(before, peak()); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", script, "convert", str(out), "--workers", "1",
                           "--source", f"format=albef_json,path={corpus}"], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    before, after = (int(kib) << 10 for kib in done.stdout.split()[-2:])
    assert after - before < 256 << 20, f"peak RSS grew by {(after - before) >> 20} MiB"
    dataset = open_store(out)
    assert sorted(row["caption"] for row in iter_rows(dataset)) == ["first", "last"]
    (reject,) = [json.loads(line) for line in dataset.read_text(REJECTS_NAME).splitlines()]
    assert (reject["key"], reject["reason"]) == ("1", "record_too_large")
    assert reject["detail"] == f"{record_bytes} bytes > {1 << 20}"


def test_a_long_jsonl_line_is_skipped_unheld(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg((200, 0, 0)))
    (tmp_path / "b.jpg").write_bytes(jpeg((0, 200, 0)))
    lines = [entry("a.jpg"), entry("b.jpg", "y" * (2 << 20)), "[" * 50_000, entry("b.jpg")]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    rows, rejects = run(tmp_path / "out", SourceSpec(format="jsonl", path=str(corpus)))
    assert sorted(rows) == ["c:1", "c:4"]
    assert rejects == {"c:2": "record_too_large", "c:3": "too_deeply_nested"}


def test_tar_members_declaring_100_gb_are_rejected_unread(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    sparse = tar_with_sparse_member(shards / "a.tar", "000001.jpg", 100 * GB)  # a few KB on disk
    add_members(sparse, [("000001.txt", b"sparse"), ("000002.jpg", jpeg((200, 0, 0))), ("000002.txt", b"kept"),
                         ("000003.jpg", jpeg((0, 200, 0))), ("000003.json", b"[" * 100_000)])
    tar_declaring(shards / "b.tar", [("000010.jpg", jpeg((0, 0, 200))), ("000010.txt", b"kept too")],
                  "000011.jpg", declared=100 * GB, present=1 << 20)
    assert (shards / "a.tar").stat().st_blocks * 512 < 1 << 20 and (shards / "b.tar").stat().st_size < 2 << 20
    rows, rejects = run(tmp_path / "out", SourceSpec(format="webdataset", path=str(shards)))
    assert sorted(rows) == ["shards:a.tar/000002", "shards:b.tar/000010"]
    # b.tar's lying member is skipped unread; the tar ends inside it, so the rest of b.tar is unreadable
    assert rejects == {"shards:a.tar/000001": "file_too_large", "shards:a.tar/000003": "too_deeply_nested",
                       "shards:b.tar": "corrupt_archive"}


def test_coco_captions_dropped_from_a_record_are_counted(tmp_path: Path) -> None:
    (tmp_path / "1.jpg").write_bytes(jpeg((200, 0, 0)))
    captions = ["A dog, running.", "", "a dog running", " ?! ", "Another one.", "A DOG RUNNING"]
    coco = {"images": [{"id": 1, "file_name": "1.jpg"}],
            "annotations": [{"image_id": 1, "caption": c} for c in captions]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    result = convert(ConvertConfig(out=str(tmp_path / "out"), workers=1, max_reject_count=0,
                                   sources=[SourceSpec(format="coco", path=str(tmp_path / "captions.json"))]))
    dataset = open_store(result.datasets["train"].location)
    (row,) = iter_rows(dataset)
    assert row["caption"] == ["a dog running", "another one"]
    rejects = [json.loads(line) for line in dataset.read_text(REJECTS_NAME).splitlines()]
    assert [(r["key"], r["reason"], r["detail"]) for r in rejects] == [
        ("1", "caption_dropped_empty", "caption 1 ''"),
        ("1", "caption_dropped_duplicate", "caption 2 'a dog running'"),
        ("1", "caption_dropped_empty", "caption 3 ' ?! '"),
        ("1", "caption_dropped_duplicate", "caption 5 'A DOG RUNNING'"),
    ]
    assert result.datasets["train"].manifest.rejected == {"caption_dropped_duplicate": 2, "caption_dropped_empty": 2}
    assert result.reject_limit_error is None  # captions, not records: the record itself was kept
