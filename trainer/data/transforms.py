"""CPU side of the image pipeline: decode, RandomResizedCrop and flip for the two training views,
the eval resize, and the CLIP normalisation both sides share.

Only what needs the full-resolution image runs here; the per-pixel colour and RandAugment ops run
batched on the device (`device_augment.py`) from parameters drawn here (`augment_params.py`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from trainer.config import AugmentConfig
from trainer.data.augment_params import draw_view_params

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_RATIO = (3 / 4, 4 / 3)


class CropBox(NamedTuple):
    """A crop in the pixel coordinates of the full-size image."""

    top: int
    left: int
    height: int
    width: int


def draw_crop(rng: np.random.Generator, width: int, height: int, scale_min: float) -> CropBox:
    """torchvision's RandomResizedCrop.get_params (scale (scale_min, 1), ratio 3/4..4/3), from `rng`."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale_min, 1.0)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return CropBox(top, left, h, w)
    # Fallback: the largest central crop whose ratio lies in CROP_RATIO.
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def decode(data: bytes, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode to RGB. With `min_size`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8)
    that still leaves at least that many pixels, which is most of the cost of a large photo."""
    image = Image.open(io.BytesIO(data))
    if min_size is not None:
        image.draft(None, min_size)
    return image.convert("RGB")


def crop_source_size(full: tuple[int, int], boxes: Sequence[CropBox], img_size: int) -> tuple[int, int]:
    """The smallest decoded size at which every box still holds at least img_size x img_size pixels."""
    width, height = full
    return (
        max(1, min(width, max(math.ceil(width * img_size / b.width) for b in boxes))),
        max(1, min(height, max(math.ceil(height * img_size / b.height) for b in boxes))),
    )


class TwoViewTransform:
    """Encoded image -> two independently drawn views: uint8 crops (V, 3, S, S) and params (V, P).

    Each view draws its crop, its flip and then its device-side parameters from its own generator.
    Flipping here, before the colour ops, gives the same distribution as TCL's order (colour, then
    flip): every colour op and the blur are mirror-symmetric, and RandAugment still runs after the flip.
    """

    def __init__(self, aug: AugmentConfig, img_size: int) -> None:
        self.aug = aug
        self.img_size = img_size

    def __call__(self, data: bytes, rngs: Sequence[np.random.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        image = Image.open(io.BytesIO(data))
        full = image.size
        boxes = [draw_crop(rng, *full, self.aug.scale_min) for rng in rngs]
        flips = [bool(rng.random() < self.aug.flip_p) for rng in rngs]
        params = np.stack([draw_view_params(rng, self.aug) for rng in rngs])
        image.draft(None, crop_source_size(full, boxes, self.img_size))
        image = image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy an RGB decode
        sx, sy = image.width / full[0], image.height / full[1]
        # Flip in PIL and write each view straight into the (V, 3, S, S) output: one copy per view.
        crops = np.empty((len(boxes), 3, self.img_size, self.img_size), dtype=np.uint8)
        for view, (box, flip) in enumerate(zip(boxes, flips, strict=True)):
            region = (box.left * sx, box.top * sy, (box.left + box.width) * sx, (box.top + box.height) * sy)
            pixels = image.resize((self.img_size, self.img_size), Image.Resampling.BICUBIC, box=region)
            if flip:
                pixels = pixels.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crops[view] = np.asarray(pixels).transpose(2, 0, 1)
        return torch.from_numpy(crops), torch.from_numpy(params)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) floats in [0, 1] -> CLIP-normalised, in the dtype of `images`."""
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std


class EvalTransform:
    """Encoded image -> resized to S x S (bicubic, aspect not kept, as TCL's retrieval eval), normalised."""

    def __init__(self, img_size: int) -> None:
        self.img_size = img_size

    def __call__(self, data: bytes) -> torch.Tensor:
        image = decode(data, (self.img_size, self.img_size))
        pixels = np.asarray(image.resize((self.img_size, self.img_size), Image.Resampling.BICUBIC))
        return normalize(torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 255)
