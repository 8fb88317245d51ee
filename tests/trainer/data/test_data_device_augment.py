"""Device-side ops against independent references: torchvision's functional ops applied per image,
a numpy re-implementation of cv2.warpAffine, hand-computed cases, and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from tests.trainer.data.data_corpus import random_image
from trainer.config import AugmentConfig
from trainer.data import augment_params as ap
from trainer.data import device_augment as da
from trainer.data.transforms import CLIP_MEAN, CLIP_STD

H, W = 24, 32  # not square: catches swapped axes


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.stack([torch.from_numpy(random_image(rng, W, H)).permute(2, 0, 1) for _ in range(6)]).float() / 255


def per_image(reference, images: torch.Tensor, values: list[float]) -> torch.Tensor:
    return torch.stack([reference(image, value) for image, value in zip(images, values)])


FACTORS = [0.6, 0.8, 1.0, 1.2, 1.36, 1.4]


@pytest.mark.parametrize(
    ("ours", "reference", "tolerance"),
    [
        (da.adjust_brightness, TF.adjust_brightness, 1e-6),
        (da.adjust_sharpness, TF.adjust_sharpness, 1e-5),
    ],
)
def test_blend_ops_match_torchvision(images, ours, reference, tolerance) -> None:
    expected = per_image(reference, images, FACTORS)
    torch.testing.assert_close(ours(images, torch.tensor(FACTORS)), expected, atol=tolerance, rtol=0)


def jitter_alone(op: int, factors: list[float]) -> torch.Tensor:
    """Params with colour jitter on and only `op` (first in the order) away from its identity."""
    params = torch.zeros(len(factors), ap.num_params(0))
    params[:, ap.JITTER_ON] = 1
    params[:, ap.JITTER_ORDER:ap.JITTER_ORDER + 4] = torch.tensor([op] + [o for o in range(4) if o != op]).float()
    params[:, ap.BRIGHTNESS:ap.HUE] = 1
    params[:, ap.BRIGHTNESS + op] = torch.tensor(factors)
    return params


@pytest.mark.parametrize(
    ("op", "reference", "values"),
    [
        (0, TF.adjust_brightness, FACTORS),
        (1, TF.adjust_contrast, FACTORS),
        (2, TF.adjust_saturation, FACTORS),
        (3, TF.adjust_hue, [-0.1, -0.05, 0.0, 0.03, 0.07, 0.1]),
    ],
)
def test_each_jitter_op_matches_torchvision(images, op, reference, values) -> None:
    expected = per_image(reference, images, values)
    # torchvision's grey weighs red 0.2989, PIL's 0.299; hue 0 elsewhere is a float round trip
    got = da.DeviceAugment.color_jitter(images, jitter_alone(op, values))
    torch.testing.assert_close(got, expected, atol=1e-3 if op in (1, 2) else 1e-5, rtol=0)


def test_jitter_off_or_identity_factors_change_nothing(images) -> None:
    params = jitter_alone(0, [1.0] * 6)
    params[:, ap.HUE] = 0.05
    params[:, ap.JITTER_ON] = 0  # drawn factors, but jitter off
    assert torch.equal(da.DeviceAugment.color_jitter(images, params), images)


def test_hue_matches_torchvision(images) -> None:
    shifts = [-0.1, -0.05, 0.0, 0.03, 0.07, 0.1]
    expected = per_image(TF.adjust_hue, images, shifts)
    torch.testing.assert_close(da.adjust_hue(images, torch.tensor(shifts)), expected, atol=1e-5, rtol=0)


def test_hue_keeps_greys_and_full_turn_is_identity(images) -> None:
    grey = images.mean(1, keepdim=True).expand_as(images)
    torch.testing.assert_close(da.adjust_hue(grey, torch.full((6,), 0.3)), grey, atol=1e-6, rtol=0)
    torch.testing.assert_close(da.adjust_hue(images, torch.ones(6)), images, atol=1e-5, rtol=0)


def test_grayscale_uses_itu_601_weights(images) -> None:
    expected = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    torch.testing.assert_close(da.grayscale(images)[:, 0], expected, atol=1e-6, rtol=0)


def test_blur_matches_torchvision(images) -> None:
    sigmas = [0.1, 0.5, 0.9, 1.3, 1.7, 2.0]
    expected = per_image(lambda img, s: TF.gaussian_blur(img, [13, 13], [s, s]), images, sigmas)
    torch.testing.assert_close(da.gaussian_blur(images, torch.tensor(sigmas)), expected, atol=1e-5, rtol=0)


def test_autocontrast_matches_torchvision(images) -> None:
    low_contrast = images * 0.5 + 0.2
    low_contrast[0, 1] = 0.4  # a constant channel stays as it is
    expected = torch.stack([TF.autocontrast(image) for image in low_contrast])
    torch.testing.assert_close(da.autocontrast(low_contrast), expected, atol=1e-6, rtol=0)


def test_equalize_matches_torchvision_on_uint8(images) -> None:
    levels = (images * 255).round().to(torch.uint8)
    levels[1, 2] = 7  # constant channel: unchanged
    expected = torch.stack([TF.equalize(image) for image in levels]).float() / 255
    torch.testing.assert_close(da.equalize(levels.float() / 255), expected, atol=0, rtol=0)


def albef_matrix(name: str, arg: float, height: int, width: int) -> np.ndarray:
    """The forward matrices ALBEF's randaugment.py hands to cv2.warpAffine."""
    if name == "ShearX":
        return np.array([[1, arg, 0], [0, 1, 0]], float)
    if name == "ShearY":
        return np.array([[1, 0, 0], [arg, 1, 0]], float)
    if name == "TranslateX":
        return np.array([[1, 0, -arg], [0, 1, 0]], float)
    if name == "TranslateY":
        return np.array([[1, 0, 0], [0, 1, -arg]], float)
    # cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1)
    cx, cy = width / 2, height / 2
    a, b = math.cos(math.radians(arg)), math.sin(math.radians(arg))
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])


def warp_reference(image: np.ndarray, forward: np.ndarray, fill: float) -> np.ndarray:
    """cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT) in float64 numpy: out(p) = in(M^-1 p)."""
    _, height, width = image.shape
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))
    ys, xs = np.mgrid[0:height, 0:width]
    src = inverse @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    x0, y0 = np.floor(src[0]).astype(int), np.floor(src[1]).astype(int)
    fx, fy = src[0] - x0, src[1] - y0
    out = np.zeros((image.shape[0], xs.size))
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        values = np.where(inside, image[:, yy.clip(0, height - 1), xx.clip(0, width - 1)], fill)
        out += weight * values
    return out.reshape(image.shape)


GEOMETRIC = [("ShearX", 0.21), ("ShearX", -0.21), ("ShearY", 0.21), ("TranslateX", -7.0), ("TranslateY", 7.0),
             ("Rotate", 21.0), ("Rotate", -21.0)]


@pytest.mark.parametrize(("name", "arg"), GEOMETRIC)
def test_geometric_ops_match_cv2_semantics(images, name, arg) -> None:
    op = torch.full((6,), float(ap.RA_OPS.index(name)))
    matrices, geometric = da.randaugment_matrices(op, torch.full((6,), arg), H, W)
    assert geometric.all()
    ours = da.warp_affine(images, matrices, ap.RA_FILL)
    expected = np.stack([warp_reference(img.double().numpy(), albef_matrix(name, arg, H, W), ap.RA_FILL) for img in images])
    torch.testing.assert_close(ours, torch.from_numpy(expected).float(), atol=2e-5, rtol=0)


def test_translate_and_half_turn_by_hand(images) -> None:
    op = torch.full((6,), float(ap.RA_OPS.index("TranslateX")))
    matrices, _ = da.randaugment_matrices(op, torch.full((6,), 3.0), H, W)
    shifted = da.warp_affine(images, matrices, ap.RA_FILL)
    torch.testing.assert_close(shifted[..., :-3], images[..., 3:], atol=1e-5, rtol=0)
    assert torch.allclose(shifted[..., -3:], torch.tensor(128 / 255), atol=1e-6)
    # Rotate 180 about (W/2, H/2), cv2's centre in pixel-centre coordinates: (x, y) <- (W - x, H - y)
    op = torch.full((6,), float(ap.RA_OPS.index("Rotate")))
    matrices, _ = da.randaugment_matrices(op, torch.full((6,), 180.0), H, W)
    turned = da.warp_affine(images, matrices, ap.RA_FILL)
    torch.testing.assert_close(turned[..., 1:, 1:], images[..., 1:, 1:].flip(-1, -2), atol=1e-4, rtol=0)
    assert torch.allclose(turned[..., 0, :], torch.tensor(128 / 255), atol=1e-4)


def test_non_geometric_ops_get_identity_matrices() -> None:
    op = torch.arange(5).float()  # Identity .. Sharpness
    matrices, geometric = da.randaugment_matrices(op, torch.full((5,), 1.36), H, W)
    assert not geometric.any()
    torch.testing.assert_close(matrices, torch.eye(2, 3).expand(5, 2, 3))


def reference_view(image: torch.Tensor, params: np.ndarray) -> torch.Tensor:
    """The TCL transform for one image, op by op with torchvision / the numpy warp, in TCL's order."""
    jitter = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    x = image
    if params[ap.JITTER_ON]:
        for position in range(4):
            op = int(params[ap.JITTER_ORDER + position])
            x = jitter[op](x, float(params[ap.BRIGHTNESS + op]))
    if params[ap.GRAYSCALE_ON]:
        x = da.grayscale(x[None])[0].expand(3, -1, -1)
    if params[ap.BLUR_ON]:
        sigma = float(params[ap.BLUR_SIGMA])
        x = TF.gaussian_blur(x, [13, 13], [sigma, sigma])
    for slot in range(2):
        op, applied, arg = params[ap.RA_FIRST + 3 * slot:ap.RA_FIRST + 3 * slot + 3]
        name = ap.RA_OPS[int(op)]
        if not applied or name == "Identity":
            continue
        if name == "AutoContrast":
            x = TF.autocontrast(x)
        elif name == "Equalize":
            x = TF.equalize((x * 255).round().to(torch.uint8)).float() / 255
        elif name in ("Brightness", "Sharpness"):
            x = (TF.adjust_brightness if name == "Brightness" else TF.adjust_sharpness)(x, float(arg))
        else:
            x = torch.from_numpy(warp_reference(x.double().numpy(), albef_matrix(name, float(arg), H, W), ap.RA_FILL)).float()
    return TF.normalize(x, list(CLIP_MEAN), list(CLIP_STD))


def drawn_params(count: int, seed: int) -> np.ndarray:
    """Drawn rows, with the RandAugment slots forced through every op (applied) so all are covered."""
    rng = np.random.default_rng(seed)
    params = np.stack([ap.draw_view_params(rng, AugmentConfig()) for _ in range(count)])
    params[:, ap.RA_FIRST] = np.arange(count) % len(ap.RA_OPS)
    params[:, ap.RA_FIRST + 1] = 1
    for i in range(count):
        magnitude, signed = ap.randaugment_argument(ap.RA_OPS[i % len(ap.RA_OPS)], 7)
        params[i, ap.RA_FIRST + 2] = -magnitude if signed and i % 4 >= 2 else magnitude
    return params


def test_device_augment_matches_per_image_reference() -> None:
    rng = np.random.default_rng(3)
    count = 20
    image_u8 = torch.from_numpy(np.stack([random_image(rng, W, H) for _ in range(2 * count)])).permute(0, 3, 1, 2)
    params = drawn_params(2 * count, seed=11)
    first, second = da.DeviceAugment(AugmentConfig())(
        image_u8.reshape(2, count, 3, H, W), torch.from_numpy(params).reshape(2, count, -1)
    )
    ours = torch.cat([first, second])
    expected = torch.stack([reference_view(img.float() / 255, p) for img, p in zip(image_u8, params)])
    difference = (ours - expected).abs()
    # PIL's and torchvision's grey weights differ by 1e-4 (0.299 vs 0.2989), which can move a pixel
    # across an equalize level; everything else agrees to float precision.
    assert difference.mean() < 2e-4
    assert (difference > 1e-3).float().mean() < 0.01


def test_all_ops_off_is_plain_normalisation() -> None:
    image_u8 = torch.randint(0, 256, (2, 3, 3, H, W), dtype=torch.uint8)
    params = torch.zeros(2, 3, ap.num_params(2))
    params[..., ap.BRIGHTNESS:ap.HUE] = 1.3  # drawn factors are ignored while their op is off
    first, second = da.DeviceAugment(AugmentConfig())(image_u8, params)
    expected = TF.normalize(image_u8.float() / 255, list(CLIP_MEAN), list(CLIP_STD))
    torch.testing.assert_close(first, expected[0])
    torch.testing.assert_close(second, expected[1])


def test_colour_ops_commute_with_flip() -> None:
    """Why flipping in the loader (before the colour ops) keeps TCL's distribution."""
    rng = np.random.default_rng(4)
    image_u8 = torch.from_numpy(np.stack([random_image(rng, W, H) for _ in range(8)])).permute(0, 3, 1, 2)
    params = torch.from_numpy(np.stack([ap.draw_view_params(rng, AugmentConfig(randaugment_n=0)) for _ in range(8)]))
    params[:, ap.JITTER_ON] = 1
    params[::2, ap.BLUR_ON] = 1
    augment = da.DeviceAugment(AugmentConfig(randaugment_n=0))
    flipped_first, _ = augment(image_u8.flip(-1).view(2, 4, 3, H, W), params.view(2, 4, -1))
    first, _ = augment(image_u8.view(2, 4, 3, H, W), params.view(2, 4, -1))
    torch.testing.assert_close(flipped_first, first.flip(-1), atol=1e-5, rtol=0)


def test_output_dtype_follows_autocast() -> None:
    augment = da.DeviceAugment(AugmentConfig())
    image_u8 = torch.randint(0, 256, (2, 2, 3, H, W), dtype=torch.uint8)
    params = torch.from_numpy(drawn_params(4, seed=0)).view(2, 2, -1)
    plain, _ = augment(image_u8, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = augment(image_u8, params)
    assert plain.dtype == torch.float32 and low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), plain, atol=0.02, rtol=0.01)  # computed in fp32, cast at the end


def test_bad_shapes_are_named() -> None:
    augment = da.DeviceAugment(AugmentConfig())
    with pytest.raises(ValueError, match="image_u8 must be uint8"):
        augment(torch.zeros(2, 2, 3, H, W), torch.zeros(2, 2, 18))
    with pytest.raises(ValueError, match=r"aug_params must be \(2, B, 18\) for randaugment_n=2"):
        augment(torch.zeros(2, 2, 3, H, W, dtype=torch.uint8), torch.zeros(2, 2, 12))


def test_traces_as_one_graph_for_torch_compile() -> None:
    """No graph break (fullgraph=True raises on one): data-dependent Python branching or a host
    read would break the graph, and on a GPU stall the stream."""
    augment = da.DeviceAugment(AugmentConfig())
    image_u8 = torch.randint(0, 256, (2, 2, 3, 16, 16), dtype=torch.uint8)
    params = torch.from_numpy(drawn_params(4, seed=1)).view(2, 2, -1)
    traced = torch.compile(augment, backend="eager", fullgraph=True)(image_u8, params)
    for got, expected in zip(traced, augment(image_u8, params), strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu_without_host_synchronisation() -> None:
    augment = da.DeviceAugment(AugmentConfig())
    rng = np.random.default_rng(6)
    image_u8 = torch.from_numpy(np.stack([random_image(rng, W, H) for _ in range(16)])).permute(0, 3, 1, 2)
    image_u8 = image_u8.reshape(2, 8, 3, H, W)
    params = torch.from_numpy(drawn_params(16, seed=2)).view(2, 8, -1)
    on_cpu = augment(image_u8, params)
    on_gpu_module, gpu_images, gpu_params = augment.to("cuda"), image_u8.cuda(), params.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_gpu = on_gpu_module(gpu_images, gpu_params)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for got, expected in zip(on_gpu, on_cpu, strict=True):
        difference = (got.cpu() - expected).abs()
        assert difference.mean() < 1e-4 and (difference > 1e-3).float().mean() < 0.01  # equalize level flips
