"""Image validation and normalisation, against pictures drawn here and sizes worked out by hand."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dataprep.images import ImageOptions, ImageRejected, process_image, target_size
from dataprep.records import RejectReason
from tests.dataprep.corpus import EXIF_ORIENTATION, encode, mean_abs_diff, picture

OPTIONS = ImageOptions(max_short_side=64)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.mode) == ("JPEG", "RGB")
    return image


@pytest.mark.parametrize(
    ("size", "bound", "expected"),
    [
        ((300, 200), 64, (96, 64)),
        ((200, 300), 64, (64, 96)),
        ((1000, 333), 100, (300, 100)),  # 1000 * 100 / 333 = 300.3
        ((64, 500), 64, None),  # the shorter side is already within the bound
        ((640, 480), None, None),
    ],
)
def test_target_size(size: tuple[int, int], bound: int | None, expected: tuple[int, int] | None) -> None:
    assert target_size(*size, bound) == expected


def test_an_upright_rgb_jpeg_within_the_bound_keeps_its_bytes() -> None:
    data = encode(picture(1, 80, 60), "JPEG", quality=95)
    result = process_image(data, OPTIONS)
    assert (result.data, result.width, result.height) == (data, 80, 60)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
def test_other_formats_become_jpeg(fmt: str) -> None:
    image = picture(2, 50, 40)
    result = process_image(encode(image, fmt), OPTIONS)
    assert (result.width, result.height) == (50, 40)
    assert mean_abs_diff(decoded(result.data), image) < 4


def test_large_jpeg_is_shrunk_through_draft_decoding() -> None:
    image = picture(3, 1200, 800)  # draft decodes at 1/8 (150 x 100), then resizes to 96 x 64
    result = process_image(encode(image, "JPEG", quality=95), OPTIONS)
    assert (result.width, result.height) == (96, 64)
    assert mean_abs_diff(decoded(result.data), image.resize((96, 64), Image.Resampling.BILINEAR)) < 6


@pytest.mark.parametrize(
    ("orientation", "stored_from_upright"),
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_90),  # viewer rotates 90 clockwise: the file holds it 90 counter-clockwise
        (8, Image.Transpose.ROTATE_270),
        (2, Image.Transpose.FLIP_LEFT_RIGHT),
    ],
)
def test_exif_orientation_is_applied(orientation: int, stored_from_upright: Image.Transpose) -> None:
    upright = picture(4, 120, 90)  # shrunk too: stored 90 x 120 when rotated, bound 64 on the upright image
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encode(upright.transpose(stored_from_upright), "JPEG", quality=95, exif=exif.tobytes())
    result = process_image(data, OPTIONS)
    assert (result.width, result.height) == (85, 64)  # 120 * 64 / 90 = 85.3
    expected = upright.resize((85, 64), Image.Resampling.BILINEAR)
    assert mean_abs_diff(decoded(result.data), expected) < 6
    wrong = expected.transpose(Image.Transpose.ROTATE_180)
    assert mean_abs_diff(decoded(result.data), wrong) > 20, "the check must tell orientations apart"


def test_grey_cmyk_and_transparent_images_become_rgb() -> None:
    grey = picture(5, 40, 40).convert("L")
    assert mean_abs_diff(decoded(process_image(encode(grey, "JPEG"), OPTIONS).data), grey.convert("RGB")) < 4
    cmyk = picture(6, 40, 40)
    result = decoded(process_image(encode(cmyk.convert("CMYK"), "JPEG", quality=95), OPTIONS).data)
    assert mean_abs_diff(result, cmyk) < 6
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # fully transparent black: white on output
    white = decoded(process_image(encode(clear, "PNG"), OPTIONS).data)
    assert white.getextrema() == ((255, 255), (255, 255), (255, 255))


def _rejection(data: bytes, options: ImageOptions = OPTIONS) -> RejectReason:
    with pytest.raises(ImageRejected) as info:
        process_image(data, options)
    return info.value.reason


def test_unusable_images_are_rejected_with_their_reason() -> None:
    jpeg = encode(picture(7, 60, 60), "JPEG")
    png = encode(picture(7, 60, 60), "PNG")
    assert _rejection(b"") == RejectReason.ZERO_SIZE
    assert _rejection(b"not an image at all") == RejectReason.CORRUPT_IMAGE
    assert _rejection(jpeg[: len(jpeg) // 2]) == RejectReason.TRUNCATED_IMAGE
    assert _rejection(png[: len(png) // 2]) == RejectReason.TRUNCATED_IMAGE
    assert _rejection(encode(picture(8, 9, 60), "PNG")) == RejectReason.TOO_SMALL
    assert _rejection(encode(picture(9, 300, 20), "PNG")) == RejectReason.BAD_ASPECT_RATIO  # 15:1
    wide = ImageOptions(max_aspect_ratio=20)
    assert process_image(encode(picture(9, 300, 20), "PNG"), wide).width == 300
