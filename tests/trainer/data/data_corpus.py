"""Test corpora: PIL-made images in MDS datasets written with streaming's own MDSWriter."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from streaming import MDSWriter

from dataprep.schema import COLUMNS

CORPUS_ROWS = 40


def encode_image(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def random_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth colour gradients plus noise: structure for the crops, variety for every op."""
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs / width, ys / height, (xs + ys) / (width + height)], -1) * rng.uniform(100, 255, 3)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def row(index: int, image: bytes, caption: str | list[str], width: int, height: int) -> dict[str, Any]:
    return {"image": image, "caption": caption, "sample_id": f"sample-{index:04d}", "source": "test",
            "width": width, "height": height}


def write_mds(out: str | Path, rows: list[dict[str, Any]], columns: dict[str, str] = COLUMNS) -> str:
    """Rows -> an MDS dataset at `out` (local or s3://), a few KB per shard so there are several."""
    with MDSWriter(out=str(out), columns=columns, size_limit=1 << 15) as writer:
        for r in rows:
            writer.write(r)
    return str(out)


def corpus_rows(count: int = CORPUS_ROWS, seed: int = 0) -> list[dict[str, Any]]:
    """Mixed sizes and formats; every third row has a list of three captions."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        width, height = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        image = encode_image(random_image(rng, width, height), "PNG" if i % 5 == 0 else "JPEG")
        caption: str | list[str] = (
            [f"Caption {k} of Image #{i}!" for k in range(3)] if i % 3 == 0 else f"A Photo, of (thing) {i}."
        )
        rows.append(row(i, image, caption, width, height))
    return rows
