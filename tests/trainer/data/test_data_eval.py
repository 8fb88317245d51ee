"""The retrieval split: images in row order, eval-resized and normalised; captions flattened with the
image <-> text mapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.trainer.data.data_corpus import encode_image, row, write_mds
from trainer.config import RunConfig
from trainer.data.loader import build_eval_data
from trainer.data.transforms import CLIP_MEAN, CLIP_STD, EvalTransform

COLOURS = [(255, 0, 0), (0, 128, 255), (10, 200, 30), (90, 90, 90), (0, 0, 0)]
CAPTIONS: list[str | list[str]] = [
    ["A Red Square.", "Crimson, block!"],
    "A blue-ish thing",
    ["green 1", "green 2", "green 3"],
    ["Grey <person> standing"],
    "Black / dark",
]


def test_retrieval_split_maps_images_and_texts(make_cfg: Callable[..., RunConfig], tmp_path: Path) -> None:
    rows = [
        row(i, encode_image(np.full((30 + 10 * i, 50, 3), colour, np.uint8), "PNG" if i % 2 else "JPEG"), caption, 50,
            30 + 10 * i)
        for i, (colour, caption) in enumerate(zip(COLOURS, CAPTIONS))
    ]
    cfg = make_cfg(f"data.eval={write_mds(tmp_path / 'eval', rows)}", "eval.batch_size=2")
    data = build_eval_data(cfg)
    assert data.texts == [
        "a red square", "crimson block", "a blue ish thing", "green 1", "green 2", "green 3", "grey person standing",
        "black dark",
    ]
    assert data.img2txt == [[0, 1], [2], [3, 4, 5], [6], [7]]
    assert data.txt2img == [0, 0, 1, 2, 2, 2, 3, 4]
    batches = list(data.images)
    assert [b.shape for b in batches] == [(2, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64)]
    images = torch.cat(batches)
    for image, colour in zip(images, COLOURS):  # solid colours: (c / 255 - mean) / std everywhere
        expected = (torch.tensor(colour) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        assert torch.allclose(image.mean((1, 2)), expected, atol=0.03)  # JPEG chroma is not exact
        assert image.std((1, 2)).max() < 0.05


def test_eval_transform_resizes_like_pil_bicubic() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    data = encode_image(pixels, "PNG")
    resized = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)).astype(np.float32) / 255
    expected = (torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(
        CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(EvalTransform(32)(data), expected)


def test_missing_eval_split_is_an_error(make_cfg: Callable[..., RunConfig]) -> None:
    with pytest.raises(ValueError, match="data.eval is not set"):
        build_eval_data(make_cfg("data.eval=null"))
