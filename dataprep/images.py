"""Decode, validate and normalise one image: upright RGB JPEG, optionally pre-resized.

Every image is fully decoded (a file that only has a valid header is caught here, not in a training
loader). The source bytes are kept when they already are an upright RGB JPEG within the size bound;
otherwise the image is re-encoded. Pre-resizing to a bound on the shorter side keeps training loaders
fast; JPEG draft mode decodes large JPEGs at a reduced scale when they will be shrunk anyway.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image
from pydantic import BaseModel, ConfigDict, Field

from dataprep.records import RejectReason

_UPRIGHT = 1
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
_MAKE_UPRIGHT = {  # EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WHITE = (255, 255, 255)


class ImageOptions(BaseModel):
    """How images are validated and normalised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_short_side: int | None = Field(None, ge=8)
    """Shrink so that the shorter side is at most this many pixels; None keeps the size."""
    quality: int = Field(90, ge=1, le=100)
    """JPEG quality when an image is re-encoded."""
    min_side: int = Field(10, ge=1)
    """Images with a side shorter than this are rejected (placeholders, tracking pixels)."""
    max_aspect_ratio: float = Field(10.0, gt=1)
    """Images whose longer/shorter side ratio exceeds this are rejected (banners, strips)."""
    max_pixels: int = Field(100_000_000, ge=1)
    """Images with more pixels by their header are rejected before decoding (a decompression bomb: a small
    PNG that decodes to gigabytes); also PIL's own Image.MAX_IMAGE_PIXELS in the workers."""


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    """JPEG bytes and their size in pixels."""

    data: bytes
    width: int
    height: int


class ImageRejected(Exception):
    """The image cannot be used; `reason` goes to the reject report."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def target_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int] | None:
    """The size after shrinking so the shorter side equals max_short_side, or None if no shrink is needed."""
    short = min(width, height)
    if max_short_side is None or short <= max_short_side:
        return None
    if width <= height:
        return max_short_side, max(1, round(height * max_short_side / width))
    return max(1, round(width * max_short_side / height)), max_short_side


def _check_geometry(width: int, height: int, options: ImageOptions) -> None:
    if width == 0 or height == 0:
        raise ImageRejected(RejectReason.ZERO_SIZE, f"image is {width}x{height}")
    if min(width, height) < options.min_side:
        raise ImageRejected(RejectReason.TOO_SMALL, f"image is {width}x{height}, min side {options.min_side}")
    ratio = max(width, height) / min(width, height)
    if ratio > options.max_aspect_ratio:
        raise ImageRejected(
            RejectReason.BAD_ASPECT_RATIO, f"image is {width}x{height} (ratio {ratio:.1f} > {options.max_aspect_ratio})"
        )


def _decode_error(error: Exception) -> ImageRejected:
    if isinstance(error, Image.DecompressionBombError):
        return ImageRejected(RejectReason.TOO_MANY_PIXELS, str(error))
    if isinstance(error, OSError) and "truncated" in str(error).lower():
        return ImageRejected(RejectReason.TRUNCATED_IMAGE, str(error))
    return ImageRejected(RejectReason.CORRUPT_IMAGE, f"{type(error).__name__}: {error}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparent pixels composited onto white (not onto whatever colour they hide)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def process_image(data: bytes, options: ImageOptions) -> ProcessedImage:
    """Validate and normalise encoded image bytes; raise ImageRejected when the image is unusable."""
    if not data:
        raise ImageRejected(RejectReason.ZERO_SIZE, "file is empty")
    Image.MAX_IMAGE_PIXELS = options.max_pixels  # PIL's own guard, for what the header check below cannot see
    try:
        with warnings.catch_warnings():  # PIL warns past its limit; the check below rejects instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        stored_w, stored_h = image.size
        if stored_w * stored_h > options.max_pixels:
            raise ImageRejected(RejectReason.TOO_MANY_PIXELS,
                                f"image is {stored_w}x{stored_h}, over {options.max_pixels} pixels")
        orientation = image.getexif().get(ExifTags.Base.Orientation, _UPRIGHT)
        upright_w, upright_h = (stored_h, stored_w) if orientation in _SWAPS_AXES else (stored_w, stored_h)
        _check_geometry(upright_w, upright_h, options)
        size = target_size(upright_w, upright_h, options.max_short_side)
        if size is not None and image.format == "JPEG":
            draft = (size[1], size[0]) if orientation in _SWAPS_AXES else size
            image.draft("RGB", draft)  # decode at 1/2, 1/4 or 1/8 scale, never below the target
        image.load()
    except ImageRejected:
        raise
    except Exception as error:  # any decoder failure on untrusted bytes means the file is unusable
        raise _decode_error(error) from error

    if size is None and image.format == "JPEG" and image.mode == "RGB" and orientation == _UPRIGHT:
        return ProcessedImage(data, upright_w, upright_h)

    image = _to_rgb(image)
    if orientation in _MAKE_UPRIGHT:
        image = image.transpose(_MAKE_UPRIGHT[orientation])
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=options.quality)
    return ProcessedImage(out.getvalue(), image.width, image.height)
