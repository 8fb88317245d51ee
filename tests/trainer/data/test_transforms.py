"""TwoViewTransform against a float reference: the same rng draws in the same order, the same crop
geometry, and pixels within a stated tolerance of an antialiased bicubic resize of the full-size image."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trainer.config import AugmentConfig
from trainer.data.augment_params import draw_view_params
from trainer.data.seeding import sample_rng
from trainer.data.transforms import CropBox, TwoViewTransform, crop_source_size, draw_crop

VIEWS = ("view0", "view1")
MEAN_TOLERANCE = 1.0
"""Mean |difference| per pixel, in uint8 levels: JPEG DCT-domain downscaling and PIL's fixed-point bicubic."""
P99_TOLERANCE = 3.0


def smooth_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like image (a smooth colour field) so that the resamplers' differences are small."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC).save(out, "JPEG", quality=95)
    return out.getvalue()


def reference_view(full: torch.Tensor, box: CropBox, flip: bool, size: int) -> torch.Tensor:
    """Crop the full-resolution float image and resize it with torch's antialiased bicubic."""
    crop = full[:, box.top : box.top + box.height, box.left : box.left + box.width]
    view = F.interpolate(crop[None], (size, size), mode="bicubic", antialias=True, align_corners=False)[0]
    return view.flip(-1) if flip else view


@pytest.mark.parametrize("size", [(640, 480), (1600, 1200)])
def test_views_are_the_drawn_crops_within_tolerance(size: tuple[int, int]) -> None:
    aug, img_size = AugmentConfig(), 256
    data = smooth_jpeg(*size)
    full = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1).float()
    transform = TwoViewTransform(aug, img_size)
    flipped = 0
    for sample in range(6):
        images, params = transform(data, [sample_rng(3, 1, str(sample), v) for v in VIEWS])
        # The draws, replayed from fresh generators in the documented order: crop, flip, device params.
        rngs = [sample_rng(3, 1, str(sample), v) for v in VIEWS]
        boxes = [draw_crop(rng, *size, aug.scale_min) for rng in rngs]
        flips = [bool(rng.random() < aug.flip_p) for rng in rngs]
        assert torch.equal(params, torch.from_numpy(np.stack([draw_view_params(rng, aug) for rng in rngs])))
        assert images.shape == (2, 3, img_size, img_size) and images.dtype == torch.uint8
        for view, (box, flip) in enumerate(zip(boxes, flips, strict=True)):
            diff = (images[view].float() - reference_view(full, box, flip, img_size).clamp(0, 255)).abs()
            assert diff.mean() < MEAN_TOLERANCE, (sample, view, box, flip)
            assert diff.flatten().quantile(0.99) < P99_TOLERANCE, (sample, view, box, flip)
            unflipped = (images[view].float() - reference_view(full, box, not flip, img_size)).abs().mean()
            assert unflipped > 4 * MEAN_TOLERANCE, "the flip must be visible against the other orientation"
            flipped += flip
    assert 0 < flipped < 12


def test_draft_decodes_at_the_smallest_scale_every_crop_allows() -> None:
    data = smooth_jpeg(1600, 1200)
    # Both crops at least 2 x 256 on each side: the 1/2 DCT scale (800 x 600) still covers them.
    large = [CropBox(0, 0, 600, 800), CropBox(100, 300, 900, 1200)]
    assert crop_source_size((1600, 1200), large, 256) == (512, 512)
    image = Image.open(io.BytesIO(data))
    image.draft(None, crop_source_size((1600, 1200), large, 256))
    assert image.size == (800, 600)
    # One crop of 300 x 300: it needs ceil(1600 * 256 / 300) = 1366 columns, so full resolution.
    small = [CropBox(0, 0, 300, 300), large[1]]
    assert crop_source_size((1600, 1200), small, 256) == (1366, 1024)
    image = Image.open(io.BytesIO(data))
    image.draft(None, crop_source_size((1600, 1200), small, 256))
    assert image.size == (1600, 1200)


def test_a_grayscale_jpeg_gives_three_equal_channels() -> None:
    out = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 256, 2, dtype=np.uint8), (96, 1)), "L").save(out, "JPEG", quality=95)
    images, _ = TwoViewTransform(AugmentConfig(), 64)(out.getvalue(), [sample_rng(0, 0, "g", v) for v in VIEWS])
    assert images.shape == (2, 3, 64, 64)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    assert images.float().std() > 10  # the gradient survives, not a constant image
