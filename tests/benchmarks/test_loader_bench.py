"""The loader benchmark's official-pipeline re-implementation does what its description says, and the
benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import loader_bench
from benchmarks.loader_bench import RandomAugment, make_jpegs, official_transform


def gradient_image() -> Image.Image:
    """Columns 0..63 hold their own index (every channel), rows identical."""
    return Image.fromarray(np.repeat(np.tile(np.arange(64, dtype=np.uint8), (32, 1))[..., None], 3, axis=2))


def test_translate_shifts_by_magnitude_pixels_and_fills_grey() -> None:
    image = gradient_image()
    random.seed(0)
    out = np.asarray(RandomAugment(m=7).apply("TranslateX", image))[..., 0]
    shift = int(round(out[0, 20])) - 20  # 10 px x 7/10 = 7, either sign
    assert abs(shift) == 7
    assert np.array_equal(out[:, 20], np.full(32, 20 + shift))
    edge = out[:, :7] if shift < 0 else out[:, -7:]
    assert (edge == 128).all()


def test_identity_and_probability_zero_leave_the_image_alone() -> None:
    image = gradient_image()
    assert RandomAugment().apply("Identity", image) is image
    assert RandomAugment(n=2, m=7, p=0.0)(image) is image


def test_official_transform_gives_normalised_256_views_that_differ(tmp_path: Path) -> None:
    (path,) = make_jpegs(tmp_path, (320, 240), 1)
    image = Image.open(path).convert("RGB")
    assert image.size == (320, 240)
    torch.manual_seed(0)
    random.seed(0)
    transform = official_transform(256)
    a, b = transform(image), transform(image)
    assert a.shape == b.shape == (3, 256, 256) and a.dtype == torch.float32
    assert not torch.equal(a, b)
    assert a.min() < -0.5 and a.max() > 0.5  # normalised around 0, not [0, 1]


@pytest.mark.timeout(120)
def test_benchmark_runs_both_pipelines(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    argv = ["--sizes", "96x64", "--workers", "1", "--batch", "2", "--batches", "1", "--images", "2",
            "--img-size", "32", "--json", str(out)]
    assert loader_bench.main(argv) == 0
    (row,) = json.loads(out.read_text())
    assert row["jpeg"] == "96x64" and row["workers"] == 1
    assert row["official"] > 0 and row["ours"] > 0
    assert row["ratio"] == pytest.approx(row["ours"] / row["official"])
