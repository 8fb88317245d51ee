"""Device side of the TCL two-view transform: colour jitter, grayscale, blur and RandAugment,
applied batched from the per-view parameters drawn in the loader workers (`augment_params.py`).

Every op runs on the whole batch and a per-sample mask picks who gets it (torch.where), so there is
no per-sample Python loop, no host synchronisation and no data-dependent shape: the module is
torch.compile friendly. Images stay float in [0, 1] between ops (PIL rounds to uint8 after each op,
a difference below one grey level; ALBEF's Sharpness even casts to uint8 without clipping, so
overshoots wrap around there and are clamped here). Ops follow ALBEF/TCL:
ColorJitter as torchvision (random order of the four ops), grayscale with ITU-R 601 weights, an exact
Gaussian blur with the drawn sigma (PIL approximates it with box blurs), and ALBEF's RandAugment ops
(cv2 pixel-centre conventions, bilinear, fill 128 for the geometric ops).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config import AugmentConfig
from trainer.data.augment_params import (
    BLUR_ON,
    BLUR_SIGMA,
    BLUR_SIGMA_RANGE,
    BRIGHTNESS,
    GRAYSCALE_ON,
    JITTER_ON,
    JITTER_ORDER,
    RA_FIELDS,
    RA_FILL,
    RA_FIRST,
    RA_OPS,
    num_params,
)
from trainer.data.transforms import CLIP_MEAN, CLIP_STD

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
BLUR_RADIUS = math.ceil(3 * BLUR_SIGMA_RANGE[1])
"""Half-width of the blur kernel: three standard deviations of the largest sigma."""


def _per_sample(values: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1), to broadcast over images."""
    return values.view(-1, 1, 1, 1)


def _select(mask: Tensor, changed: Tensor, images: Tensor) -> Tensor:
    return torch.where(_per_sample(mask), changed, images)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * images + (1 - factor) * other, clamped: the form of every PIL ImageEnhance op."""
    factor = _per_sample(factor)
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def grayscale(images: Tensor) -> Tensor:
    """(N, 3, H, W) -> luminance (N, 1, H, W). Python-scalar weights: a tensor built from a list
    would be a pageable host-to-device copy, which synchronises the stream."""
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """A blend towards black."""
    return (images * _per_sample(factor)).clamp(0, 1)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by `shift` turns, keeping saturation and value.

    Hue in sixths of a turn from the max channel; back with the closed form
    channel_n = V - C * clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1 for R, G, B.
    """
    r, g, b = images.unbind(1)
    value, _ = images.max(1)
    chroma = value - images.min(1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sixths = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    sixths = torch.remainder(sixths + 6 * shift.view(-1, 1, 1), 6)
    n = 5 - 2 * torch.arange(3, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + sixths.unsqueeze(1), 6)
    return value.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with one sigma per image; kernel 2 * BLUR_RADIUS + 1, reflect padding."""
    n, c, h, w = images.shape
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N * C, K)
    padded = F.pad(images, (BLUR_RADIUS,) * 4, mode="reflect").reshape(1, n * c, h + 2 * BLUR_RADIUS, -1)
    rows = F.conv2d(padded, kernel.view(n * c, 1, 1, -1), groups=n * c)
    return F.conv2d(rows, kernel.view(n * c, 1, -1, 1), groups=n * c).view(n, c, h, w)


def autocontrast(images: Tensor) -> Tensor:
    """Stretch each channel to [0, 1]; constant channels stay as they are."""
    low = images.amin((2, 3), keepdim=True)
    high = images.amax((2, 3), keepdim=True)
    spread = high - low
    stretched = (images - low) / torch.where(spread > 0, spread, torch.ones_like(spread))
    return torch.where(spread > 0, stretched.clamp(0, 1), images)


def equalize(images: Tensor) -> Tensor:
    """PIL's per-channel histogram equalisation on the 256 grey levels of each channel."""
    n, c, h, w = images.shape
    levels = (images * 255).round().clamp(0, 255).to(torch.int64).view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=images.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    occupied = torch.arange(256, device=images.device) * (hist > 0)
    top_count = hist.gather(1, occupied.amax(1, keepdim=True))
    step = (h * w - top_count) // 255  # (N * C, 1); 0 means a (nearly) constant channel: unchanged
    lut = (torch.cumsum(hist, 1) - hist + step // 2) // step.clamp(min=1)
    equalized = lut.clamp(0, 255).gather(1, levels)
    return torch.where(step > 0, equalized, levels).view(n, c, h, w).to(images.dtype) / 255


def adjust_sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """PIL's Sharpness: blend with a 3x3 smoothing (centre weight 5/13); the one-pixel border is kept."""
    kernel = images.new_ones(3, 3)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(images.shape[1], 1, 3, 3)
    smooth = F.pad(F.conv2d(images, kernel, groups=images.shape[1]), (1, 1, 1, 1))
    border = torch.ones_like(images[:1, :1], dtype=torch.bool)
    border[..., 1:-1, 1:-1] = False
    return _blend(images, torch.where(border, images, smooth), factor)


def warp_affine(images: Tensor, forward: Tensor, fill: float) -> Tensor:
    """cv2.warpAffine semantics: `forward` (N, 2, 3) maps source to destination pixel coordinates
    (pixel centres at integers); bilinear, `fill` outside the image."""
    n, _, h, w = images.shape
    a, b, tx = forward[:, 0].unbind(1)
    d, e, ty = forward[:, 1].unbind(1)
    det = a * e - b * d
    # inverse of [[a, b], [d, e]] and of the translation
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    itx, ity = -(ia * tx + ib * ty), -(id_ * tx + ie * ty)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=images.device, dtype=images.dtype),
        torch.arange(w, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    src_x = ia.view(n, 1, 1) * xs + ib.view(n, 1, 1) * ys + itx.view(n, 1, 1)  # (N, H, W)
    src_y = id_.view(n, 1, 1) * xs + ie.view(n, 1, 1) * ys + ity.view(n, 1, 1)
    grid = torch.stack((2 * src_x / (w - 1) - 1, 2 * src_y / (h - 1) - 1), dim=-1)
    warped = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped + fill


def randaugment_matrices(op: Tensor, arg: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """ALBEF's forward matrices for ShearX/Y, TranslateX/Y and Rotate (about (W/2, H/2), degrees,
    counter-clockwise); identity for the other ops. Returns (matrices (N, 2, 3), is_geometric (N,))."""
    one, zero = torch.ones_like(arg), torch.zeros_like(arg)
    is_op = {name: op == index for index, name in enumerate(RA_OPS)}
    theta = torch.deg2rad(arg)
    cos, sin = torch.where(is_op["Rotate"], torch.cos(theta), one), torch.where(is_op["Rotate"], torch.sin(theta), zero)
    cx, cy = width / 2, height / 2
    a, e = cos, cos
    b = torch.where(is_op["ShearX"], arg, sin)
    d = torch.where(is_op["ShearY"], arg, -sin)
    tx = torch.where(is_op["TranslateX"], -arg, (1 - cos) * cx - sin * cy)
    ty = torch.where(is_op["TranslateY"], -arg, sin * cx + (1 - cos) * cy)
    matrices = torch.stack((torch.stack((a, b, tx), 1), torch.stack((d, e, ty), 1)), 1)
    geometric = is_op["ShearX"] | is_op["ShearY"] | is_op["TranslateX"] | is_op["TranslateY"] | is_op["Rotate"]
    return matrices, geometric


class DeviceAugment(nn.Module):
    """uint8 crops (2, B, 3, H, W) + params (2, B, P) -> the two normalised views (B, 3, H, W).

    Computes in fp32 with autocast off; returns the autocast dtype when autocast is on, else fp32.
    """

    def __init__(self, aug: AugmentConfig) -> None:
        super().__init__()
        self.num_params = num_params(aug.randaugment_n)
        self.randaugment_n = aug.randaugment_n
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(3, 1, 1), persistent=False)

    def forward(self, image_u8: Tensor, aug_params: Tensor) -> tuple[Tensor, Tensor]:
        if image_u8.dtype != torch.uint8 or image_u8.dim() != 5 or image_u8.shape[0] != 2 or image_u8.shape[2] != 3:
            raise ValueError(f"image_u8 must be uint8 (2, B, 3, H, W), got {image_u8.dtype} {tuple(image_u8.shape)}")
        if aug_params.shape != (*image_u8.shape[:2], self.num_params):
            raise ValueError(
                f"aug_params must be (2, B, {self.num_params}) for randaugment_n={self.randaugment_n},"
                f" got {tuple(aug_params.shape)}"
            )
        device_type = image_u8.device.type
        out_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else torch.float32
        with torch.autocast(device_type, enabled=False):
            images = image_u8.flatten(0, 1).float() / 255  # (2B, 3, H, W)
            images = self.augment(images, aug_params.flatten(0, 1).float())
            images = (images - self.mean.to(images.device)) / self.std.to(images.device)
        first, second = images.to(out_dtype).unflatten(0, (2, -1)).unbind(0)
        return first, second

    def augment(self, images: Tensor, params: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] and (N, P) -> augmented (N, 3, H, W) in [0, 1]."""
        images = self.color_jitter(images, params)
        images = _select(params[:, GRAYSCALE_ON] > 0, grayscale(images).expand_as(images), images)
        images = _select(params[:, BLUR_ON] > 0, gaussian_blur(images, params[:, BLUR_SIGMA]), images)
        for slot in range(self.randaugment_n):
            op, applied, arg = params[:, RA_FIRST + RA_FIELDS * slot:RA_FIRST + RA_FIELDS * (slot + 1)].unbind(1)
            images = self.randaugment_op(images, torch.where(applied > 0, op, torch.zeros_like(op)), arg)
        return images

    @staticmethod
    def color_jitter(images: Tensor, params: Tensor) -> Tensor:
        """torchvision ColorJitter: the four ops in the drawn order, each with its drawn factor.

        Brightness, contrast and saturation are each a blend towards black, the mean grey or the grey
        image, so a position costs one blend (factor 1, an exact no-op, where its op is hue or jitter
        is off) and one hue rotation, kept only where its op is hue.
        """
        on = params[:, JITTER_ON] > 0
        for position in range(4):
            op = params[:, JITTER_ORDER + position].long()  # 0 brightness, 1 contrast, 2 saturation, 3 hue
            factor = params.gather(1, (BRIGHTNESS + op).unsqueeze(1)).squeeze(1)
            grey = grayscale(images)
            mean_grey = _per_sample((op == 1).to(images.dtype)) * grey.mean((1, 2, 3), keepdim=True)
            target = torch.where(_per_sample(op == 2), grey, mean_grey)  # black for brightness
            images = _blend(images, target, torch.where(on & (op < 3), factor, torch.ones_like(factor)))
            images = _select(on & (op == 3), adjust_hue(images, factor), images)
        return images

    @staticmethod
    def randaugment_op(images: Tensor, op: Tensor, arg: Tensor) -> Tensor:
        """One RandAugment slot: each image gets the op it drew (index 0, Identity, when skipped)."""
        is_op = {name: op == index for index, name in enumerate(RA_OPS)}
        images = _select(is_op["AutoContrast"], autocontrast(images), images)
        images = _select(is_op["Equalize"], equalize(images), images)
        images = _select(is_op["Brightness"], adjust_brightness(images, arg), images)
        images = _select(is_op["Sharpness"], adjust_sharpness(images, arg), images)
        matrices, geometric = randaugment_matrices(op, arg, images.shape[2], images.shape[3])
        return _select(geometric, warp_affine(images, matrices, RA_FILL), images)
