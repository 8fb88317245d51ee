"""Fixture corpora in every input format, with planted faults and hand-written expectations.

`build_corpus` writes real JPEG/PNG/WebP files, JSON/CSV/TSV/JSONL files and tar shards, and returns
what a conversion must produce: each accepted row's caption (cleaned by hand here, not by the code
under test) and its picture, and exactly which records must be rejected and why.
"""

from __future__ import annotations

import colorsys
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

from dataprep.sources import SourceSpec

MAX_SHORT_SIDE = 64  # the image bound the fixture conversions use
EXIF_ORIENTATION = 0x0112


def picture(seed: int, width: int, height: int) -> Image.Image:
    """A smooth picture with its own colour and an off-centre mark (so rotations and mix-ups show)."""
    hue = (seed * 0.618034) % 1.0
    base = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.7, 0.9))
    image = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 3, height // 3), fill=tuple(255 - c for c in base))
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel value (0-255) of two same-size RGB images."""
    assert a.size == b.size, (a.size, b.size)
    histogram = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).histogram()
    return sum((i % 256) * n for i, n in enumerate(histogram)) / (a.width * a.height * 3)


@dataclass(frozen=True)
class ExpectedRow:
    caption: str | list[str]
    picture: Image.Image
    """The upright RGB picture the row must show (before the size bound)."""
    size: tuple[int, int]
    """(width, height) the stored image must have, worked out by hand."""
    source_bytes: bytes | None = None
    """Set when the stored bytes must be the source file's bytes themselves."""


@dataclass
class Corpus:
    root: Path
    sources: list[SourceSpec] = field(default_factory=list)
    rows: dict[str, ExpectedRow] = field(default_factory=dict)
    """sample_id -> what its row must hold."""
    rejects: set[tuple[str, str, str]] = field(default_factory=set)
    """(source, key, reason) of every planted fault."""


class _Builder:
    def __init__(self, root: Path) -> None:
        self.corpus = Corpus(root)
        self.images = root / "images"
        self.images.mkdir(parents=True)
        self.seed = 0

    def image_file(self, name: str, data: bytes) -> str:
        (self.images / name).write_bytes(data)
        return f"images/{name}"

    def plain(self, name: str, width: int, height: int, fmt: str = "JPEG") -> tuple[str, Image.Image, bytes]:
        """A fresh picture saved as name; returns (ref, picture, file bytes)."""
        self.seed += 1
        image = picture(self.seed, width, height)
        data = encode(image, fmt, quality=95) if fmt == "JPEG" else encode(image, fmt)
        return self.image_file(name, data), image, data

    def expect(self, sample_id: str, caption: str | list[str], image: Image.Image, size: tuple[int, int],
               source_bytes: bytes | None = None) -> None:
        self.corpus.rows[sample_id] = ExpectedRow(caption, image, size, source_bytes)

    def reject(self, source: str, key: str, reason: str) -> None:
        self.corpus.rejects.add((source, key, reason))


def _pretrain_json(b: _Builder) -> None:
    """TCL/ALBEF pretraining JSON: every image kind and most planted image faults."""
    entries: list[object] = []

    def add(ref: str, caption: object) -> str:
        entries.append({"image": ref, "caption": caption})
        return str(len(entries) - 1)

    ref, image, data = b.plain("kept.jpg", 80, 60)  # an upright RGB JPEG within the bound: kept as is
    b.expect(f"pre:{add(ref, 'A dog, running!')}", "a dog running", image, (80, 60), source_bytes=data)
    ref, image, _ = b.plain("small.png", 70, 50, "PNG")
    b.expect(f"pre:{add(ref, ['Two CATS.', 'cats (two)'])}", ["two cats", "cats two"], image, (70, 50))
    ref, image, _ = b.plain("large.jpg", 300, 200)  # shorter side 200 -> 64, longer 300 * 64 / 200 = 96
    b.expect(f"pre:{add(ref, 'A wide - street/road')}", "a wide street road", image, (96, 64))
    grey = picture(100, 50, 40).convert("L")
    ref = b.image_file("grey.jpg", encode(grey, "JPEG", quality=95))
    b.expect(f"pre:{add(ref, 'grey')}", "grey", grey.convert("RGB"), (50, 40))
    upright = picture(101, 40, 60)  # stored rotated, EXIF says "rotate 90 clockwise to view" (6)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    ref = b.image_file("rotated.jpg", encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    b.expect(f"pre:{add(ref, 'Upright <person>')}", "upright person", upright, (40, 60))
    rgba = Image.new("RGBA", (50, 50), (0, 0, 255, 0))  # transparent blue left half must become white
    ImageDraw.Draw(rgba).rectangle((25, 0, 49, 49), fill=(200, 30, 30, 255))
    ref = b.image_file("alpha.png", encode(rgba, "PNG"))
    on_white = Image.new("RGB", (50, 50), (255, 255, 255))
    ImageDraw.Draw(on_white).rectangle((25, 0, 49, 49), fill=(200, 30, 30))
    b.expect(f"pre:{add(ref, 'half red')}", "half red", on_white, (50, 50))

    kept_copy = (b.images / "kept.jpg").read_bytes()
    b.reject("pre", add(b.image_file("copy_of_kept.jpg", kept_copy), "a dog running"), "duplicate")
    b.reject("pre", add("images/not_there.jpg", "missing"), "missing_file")
    b.reject("pre", add(b.image_file("corrupt.jpg", bytes(range(256)) * 8), "corrupt"), "corrupt_image")
    whole = encode(picture(102, 60, 60), "JPEG")
    b.reject("pre", add(b.image_file("cut.jpg", whole[: len(whole) // 2]), "cut"), "truncated_image")
    b.reject("pre", add(b.image_file("empty.jpg", b""), "empty file"), "zero_size")
    strip = encode(picture(103, 220, 20), "PNG")  # 11:1
    b.reject("pre", add(b.image_file("strip.png", strip), "strip"), "bad_aspect_ratio")
    tiny = encode(picture(104, 6, 6), "PNG")
    b.reject("pre", add(b.image_file("tiny.png", tiny), "tiny"), "too_small")
    ref, _, _ = b.plain("unsaid.jpg", 30, 30)
    b.reject("pre", add(ref, " ?! ... "), "empty_caption")
    b.reject("pre", add(5, "an image path that is a number"), "malformed_record")

    path = b.corpus.root / "pretrain.json"
    path.write_text(json.dumps(entries))
    b.corpus.sources.append(SourceSpec(format="albef_json", path=str(path), name="pre"))


def _retrieval_json(b: _Builder) -> None:
    """Retrieval train JSON: one entry per caption, an image's entries not adjacent."""
    refs = []
    for i in range(3):
        ref, image, data = b.plain(f"ret{i}.jpg", 48, 48)
        refs.append((ref, image, data))
    entries = [
        {"image": refs[i][0], "caption": f"Picture {i}, caption {c}.", "image_id": i} for c in (1, 2) for i in range(3)
    ]
    path = b.corpus.root / "retrieval_train.json"
    path.write_text(json.dumps(entries))
    for index, entry in enumerate(entries):
        i, c = entry["image_id"], index // 3 + 1
        b.expect(f"rtrain:{index}", f"picture {i} caption {c}", refs[i][1], (48, 48), source_bytes=refs[i][2])
    b.corpus.sources.append(SourceSpec(format="albef_json", path=str(path), name="rtrain"))


def _coco(b: _Builder) -> None:
    root = b.corpus.root / "coco"
    root.mkdir()
    images, annotations = [], []
    for image_id in (7, 9):
        ref, image, data = b.plain(f"coco{image_id}.jpg", 64, 40)
        images.append({"id": image_id, "file_name": ref})
        annotations += [{"image_id": image_id, "caption": f"COCO {image_id} first."},
                        {"image_id": image_id, "caption": f"coco {image_id} SECOND"}]
        b.expect(f"coco:{image_id}", [f"coco {image_id} first", f"coco {image_id} second"], image, (64, 40),
                 source_bytes=data)
    ref, _, _ = b.plain("coco11.jpg", 64, 40)
    images.append({"id": 11, "file_name": ref})  # no annotation
    b.reject("coco", "11", "empty_caption")
    path = root / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    b.corpus.sources.append(SourceSpec(format="coco", path=str(path), image_root=str(b.corpus.root), name="coco"))


def _tables(b: _Builder) -> None:
    """CC3M-style CSV (custom column names, a cut row, a line that is not UTF-8) and a TSV."""
    lines = [b"title,filepath,extra\n"]
    for i in range(2):
        ref, image, data = b.plain(f"cc{i}.jpg", 40, 30)
        lines.append(f'"Caption {i}, quoted",{ref},x\n'.encode())
        b.expect(f"cc:{len(lines)}", f"caption {i} quoted", image, (40, 30), source_bytes=data)
    ref, _, _ = b.plain("cc_bad.jpg", 40, 30)
    lines.append(f"Unquoted, comma,{ref},x\n".encode())  # 4 fields: the caption's comma was not quoted
    b.reject("cc", str(len(lines)), "malformed_record")
    ref, _, _ = b.plain("cc_bytes.jpg", 40, 30)
    lines.append(b"caf\xe9 latin-1," + ref.encode() + b",x\n")
    b.reject("cc", str(len(lines)), "undecodable_text")
    path = b.corpus.root / "cc.csv"
    path.write_bytes(b"".join(lines))
    b.corpus.sources.append(SourceSpec(format="csv", path=str(path), name="cc", image_column="filepath",
                                       caption_column="title"))

    rows = ["image\tcaption"]
    for i in range(2):
        ref, image, data = b.plain(f"tsv{i}.jpg", 30, 40)
        rows.append(f"{ref}\tTab separated {i}")
        b.expect(f"tsv:{len(rows)}", f"tab separated {i}", image, (30, 40), source_bytes=data)
    path = b.corpus.root / "tsv.tsv"
    path.write_text("\n".join(rows) + "\n")
    b.corpus.sources.append(SourceSpec(format="tsv", path=str(path), name="tsv"))


def _jsonl(b: _Builder) -> None:
    lines = []
    for i in range(2):
        ref, image, _ = b.plain(f"line{i}.webp", 44, 33, "WEBP")
        lines.append(json.dumps({"img": ref, "text": f"Line {i}!"}).encode())
        b.expect(f"lines:{len(lines)}", f"line {i}", image, (44, 33))
    lines.append(b"")  # blank lines are skipped but counted
    lines.append(b'{"img": "images/line0.webp", "text": ')
    b.reject("lines", str(len(lines)), "malformed_record")
    lines.append(b'{"img": "images/line1.webp", "text": "\xff"}')
    b.reject("lines", str(len(lines)), "undecodable_text")
    path = b.corpus.root / "lines.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    b.corpus.sources.append(SourceSpec(format="jsonl", path=str(path), name="lines", image_column="img",
                                       caption_column="text"))


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> None:
    """Regular members into a new tar (mode "w") or appended to an uncompressed one ("a")."""
    with tarfile.open(path, mode) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _webdataset(b: _Builder, s3_prefix: str | None) -> None:
    """Two img2dataset-style shards (on S3 when a prefix is given), and a local shard cut short."""
    folder = b.corpus.root / "wds"
    folder.mkdir()
    first, second = [], []
    _, image, data = b.plain("w0.jpg", 50, 50)
    first += [("000000.jpg", data), ("000000.txt", b"WebDataset text caption.")]
    b.expect("wds:00000.tar/000000", "webdataset text caption", image, (50, 50), source_bytes=data)
    _, image, data = b.plain("w1.png", 50, 50, "PNG")
    first += [("000001.png", data), ("000001.json", json.dumps({"caption": "From JSON", "url": "x"}).encode())]
    b.expect("wds:00000.tar/000001", "from json", image, (50, 50))
    first += [("000002.txt", b"no image for this one")]
    b.reject("wds", "00000.tar/000002", "missing_file")
    _, image, data = b.plain("w3.jpg", 50, 50)
    second += [("000003.jpg", data), ("000003.txt", b"\xff\xfe bytes")]
    b.reject("wds", "00001.tar/000003", "undecodable_text")
    _, image, data = b.plain("w4.jpg", 50, 50)
    second += [("000004.jpg", data), ("000004.txt", b"Second shard")]
    b.expect("wds:00001.tar/000004", "second shard", image, (50, 50), source_bytes=data)
    write_tar(folder / "00000.tar", first)
    write_tar(folder / "00001.tar", second)
    b.corpus.sources.append(SourceSpec(format="webdataset", path=s3_prefix or str(folder), name="wds"))

    members = []
    for i in range(3):
        _, image, data = b.plain(f"cut{i}.jpg", 40, 40)
        members += [(f"{i:06d}.jpg", data), (f"{i:06d}.txt", f"Cut shard {i}".encode())]
        if i < 2:
            b.expect(f"wdscut:cut.tar/{i:06d}", f"cut shard {i}", image, (40, 40), source_bytes=data)
    cut_folder = b.corpus.root / "wdscut"
    cut_folder.mkdir()
    whole = cut_folder / "whole.tar"
    write_tar(whole, members)
    with tarfile.open(whole) as archive:
        last_image = archive.getmember("000002.jpg")
    cut = cut_folder / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: last_image.offset_data + 10])  # ends inside the third image
    os.remove(whole)
    b.reject("wdscut", "cut.tar", "corrupt_archive")
    b.corpus.sources.append(SourceSpec(format="webdataset", path=str(cut), name="wdscut"))


def build_corpus(root: Path, s3_prefix: str | None = None) -> Corpus:
    """Every format with its planted faults; the webdataset shards are meant to be uploaded to s3_prefix
    (the caller uploads root/wds/0000*.tar there) when one is given."""
    builder = _Builder(root)
    _pretrain_json(builder)
    _retrieval_json(builder)
    _coco(builder)
    _tables(builder)
    _jsonl(builder)
    _webdataset(builder, s3_prefix)
    return builder.corpus
