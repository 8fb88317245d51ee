"""Corpora as they ship as URL lists: CC3M's headerless TSV, SBU's two line-aligned files, LAION-style
parquet, and tables without a header whose columns are named or given by position."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep.commands.convert import _parse_source
from dataprep.records import Reject, RejectReason, SourceRecord
from dataprep.sources import SourceError, SourceSpec, count_source, read_source

CC3M_LINES = [
    "a very typical bus station\thttp://example.org/bus.jpg",
    "sierra looked stunning in this top\thttps://example.org/a%20b.jpg?x=1",
    "a line without a tab",
    "local file\tpics/1.jpg",
]


def _summary(items: list) -> list[tuple]:
    return [(i.key, i.caption, i.image_url, i.image_path) if isinstance(i, SourceRecord) else (i.key, i.reason)
            for i in items]


def test_cc3m_layout_is_caption_tab_url_without_header(tmp_path: Path) -> None:
    path = tmp_path / "Train_GCC-training.tsv"
    path.write_text("\n".join(CC3M_LINES) + "\n")
    items = list(read_source(SourceSpec(format="cc3m", path=str(path))))
    assert _summary(items) == [
        ("1", "a very typical bus station", "http://example.org/bus.jpg", None),
        ("2", "sierra looked stunning in this top", "https://example.org/a%20b.jpg?x=1", None),
        ("3", RejectReason.MALFORMED_RECORD),
        ("4", "local file", None, str(tmp_path / "pics/1.jpg")),  # a path stays a path
    ]
    assert items[0].sample_id == "Train_GCC-training:1"


@pytest.mark.parametrize("columns", ["caption,url", "text,link"])
def test_headerless_tsv_with_named_or_positional_columns(tmp_path: Path, columns: str) -> None:
    path = tmp_path / "cc.tsv"
    path.write_text("\n".join(CC3M_LINES[:2]) + "\n")
    image, caption = ("url", "caption") if columns == "caption,url" else ("1", "0")  # names, or 0-based positions
    spec = SourceSpec.model_validate(
        _parse_source(f"format=tsv,path={path},columns={columns},image_column={image},caption_column={caption}"))
    assert spec.columns == columns.split(",")
    assert [(i.key, i.image_url) for i in read_source(spec)] == [
        ("1", "http://example.org/bus.jpg"), ("2", "https://example.org/a%20b.jpg?x=1")]


def test_a_header_row_with_columns_by_position(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("TEXT,URL,extra\nhello,http://h/1.png,x\n")
    (item,) = read_source(SourceSpec(format="csv", path=str(path), image_column="1", caption_column="TEXT"))
    assert (item.key, item.caption, item.image_url) == ("2", "hello", "http://h/1.png")


def test_headerless_table_without_the_columns_asked_for_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "cc.tsv"
    path.write_text(CC3M_LINES[0] + "\n")
    with pytest.raises(SourceError, match=r"no column \['image'\] in columns \['caption', 'url'\]"):
        list(read_source(SourceSpec(format="tsv", path=str(path), columns=["caption", "url"])))
    # what a new user hit before:
    with pytest.raises(SourceError, match=r"no column \['image', 'caption'\] in the header"):
        list(read_source(SourceSpec(format="tsv", path=str(path))))


def test_sbu_reads_the_two_line_aligned_files(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "SBU_captioned_photo_dataset_urls.txt").write_bytes(
        b"http://static.flickr.com/1/a.jpg\nhttp://static.flickr.com/2/b.jpg\n\nhttp://static.flickr.com/4/d.jpg\n"
        b"http://static.flickr.com/5/e.jpg\n")
    (folder / "SBU_captioned_photo_dataset_captions.txt").write_bytes(
        b"Man sits on a bench \n\xff\xfe broken\nno url for me\nthe last caption\n")
    items = list(read_source(SourceSpec(format="sbu", path=str(folder))))
    assert _summary(items) == [
        ("1", "Man sits on a bench", "http://static.flickr.com/1/a.jpg", None),
        ("2", RejectReason.UNDECODABLE_TEXT),
        ("3", RejectReason.MALFORMED_RECORD),  # empty URL line
        ("4", "the last caption", "http://static.flickr.com/4/d.jpg", None),
        ("5", RejectReason.MALFORMED_RECORD),  # the captions file has no line 5
    ]
    assert "captions file has no line 5" in items[4].detail
    by_file = list(read_source(SourceSpec(format="sbu", path=str(folder / "SBU_captioned_photo_dataset_urls.txt"),
                                          name="dataset")))
    assert _summary(by_file) == _summary(items)
    with pytest.raises(SourceError, match="no such file"):
        list(read_source(SourceSpec(format="sbu", path=str(tmp_path))))


def test_laion_parquet_and_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    table = pa.table({"URL": ["http://a/1.jpg", None, "http://a/3.jpg"], "TEXT": ["one", "two", None],
                      "similarity": [0.3, 0.4, 0.5]})
    pq.write_table(table, path, row_group_size=2)
    items = list(read_source(SourceSpec(format="parquet", path=str(path))))  # LAION's URL / TEXT by default
    assert _summary(items) == [("0", "one", "http://a/1.jpg", None), ("1", RejectReason.MALFORMED_RECORD),
                               ("2", RejectReason.MALFORMED_RECORD)]
    renamed = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"link": ["https://b/x.webp"], "alt": ["a cat"]}), renamed)
    (item,) = read_source(SourceSpec(format="parquet", path=str(renamed), image_column="link", caption_column="alt"))
    assert (item.caption, item.image_url) == ("a cat", "https://b/x.webp")
    with pytest.raises(SourceError, match=r"no column 'image' in \['link', 'alt'\]"):
        list(read_source(SourceSpec(format="parquet", path=str(renamed))))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(SourceError, match="not a Parquet file"):
        list(read_source(SourceSpec(format="parquet", path=str(tmp_path / "bad.parquet"))))


def test_a_conversion_refuses_urls_and_points_to_download(tmp_path: Path) -> None:
    path = tmp_path / "cc.tsv"
    path.write_text(CC3M_LINES[0] + "\n")
    spec = SourceSpec(format="cc3m", path=str(path))
    with pytest.raises(SourceError, match="tcl-dataprep download"):
        count_source(spec)
    assert count_source(spec, allow_urls=True) == 1
    assert not isinstance(next(iter(read_source(spec))), Reject)
