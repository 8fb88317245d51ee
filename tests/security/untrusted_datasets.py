"""Hostile MDS datasets: a split whose index.json declares other decoders than dataprep's, with a manifest.json
so that it looks finished. Its `pkl` caption is a real pickle payload that writes a file when unpickled."""

from __future__ import annotations

import io
import json
import pathlib
from pathlib import Path
from typing import Any

from PIL import Image
from streaming import MDSWriter

from dataprep.schema import COLUMNS, INDEX_NAME, MANIFEST_NAME, Manifest, ShardInfo


class WritesFile:
    """Unpickling this calls Path.write_text(marker, ...): code execution, observable as a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "the payload ran")


def jpeg(size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


def write_split(out: Path, columns: dict[str, str], caption: Any, rows: int = 2) -> Path:
    """An MDS split with these columns (each row's caption is `caption`), sealed with a dataprep manifest."""
    with MDSWriter(out=str(out), columns=columns, hashes=["sha256"], size_limit=1 << 20) as writer:
        for i in range(rows):
            row = {"image": jpeg(), "caption": caption, "sample_id": f"x:{i}", "source": "x", "width": 32, "height": 32}
            values = {name: row.get(name, "extra") for name in columns}
            writer.write({name: str(v) if columns[name] == "str" else v for name, v in values.items()})
    shards = json.loads((out / INDEX_NAME).read_text())["shards"]
    manifest = Manifest(
        samples=rows, accepted_by_source={"x": rows}, rejected={}, job="hostile",
        shards=[ShardInfo(basename=s["raw_data"]["basename"], sha256=s["raw_data"]["hashes"]["sha256"],
                          bytes=s["raw_data"]["bytes"], samples=s["samples"]) for s in shards],
    )
    (out / MANIFEST_NAME).write_text(manifest.model_dump_json())
    return out


def pickle_split(out: Path, marker: Path) -> Path:
    """The attack of issue 13 item 1: `caption` declared as pkl, its value a payload that writes `marker`."""
    return write_split(out, {**COLUMNS, "caption": "pkl"}, WritesFile(marker))
