"""The drawn augmentation parameters follow TCL's distribution (binomial bounds over many draws)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from tests.trainer.data.data_corpus import encode_image
from trainer.config import AugmentConfig
from trainer.data import augment_params as ap
from trainer.data.seeding import sample_rng
from trainer.data.transforms import TwoViewTransform, draw_crop

DRAWS = 4000


def assert_rate(hits: np.ndarray, p: float) -> None:
    """Observed frequency within 5 binomial standard deviations of p (a fixed seed: no flakiness)."""
    n = hits.size
    assert abs(hits.sum() - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9, (hits.mean(), p)


@pytest.fixture(scope="module")
def draws() -> np.ndarray:
    rng = np.random.default_rng(123)
    return np.stack([ap.draw_view_params(rng, AugmentConfig()) for _ in range(DRAWS)])


def test_layout_size_follows_randaugment_n() -> None:
    rng = np.random.default_rng(0)
    assert ap.draw_view_params(rng, AugmentConfig(randaugment_n=0)).shape == (12,)
    assert ap.draw_view_params(rng, AugmentConfig(randaugment_n=3)).shape == (21,)
    assert ap.num_params(2) == 18


def test_albef_level_mapping_at_m7() -> None:
    # ALBEF's randaugment.py with MAX_LEVEL 10, translate_const 10, at level 7 (hand-computed)
    assert ap.randaugment_argument("Brightness", 7) == (pytest.approx(1.36), False)
    assert ap.randaugment_argument("Sharpness", 7) == (pytest.approx(1.36), False)
    assert ap.randaugment_argument("ShearX", 7) == (pytest.approx(0.21), True)
    assert ap.randaugment_argument("TranslateY", 7) == (pytest.approx(7.0), True)
    assert ap.randaugment_argument("Rotate", 7) == (pytest.approx(21.0), True)
    assert ap.randaugment_argument("Equalize", 7) == (0.0, False)


def test_apply_probabilities(draws: np.ndarray) -> None:
    assert_rate(draws[:, ap.JITTER_ON] == 1, 0.8)
    assert_rate(draws[:, ap.GRAYSCALE_ON] == 1, 0.2)
    assert_rate(draws[:, ap.BLUR_ON] == 1, 0.5)
    for slot in range(2):
        assert_rate(draws[:, ap.RA_FIRST + 3 * slot + 1] == 1, 0.5)


def test_factor_ranges_and_order(draws: np.ndarray) -> None:
    factors = draws[:, ap.BRIGHTNESS:ap.HUE]
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert abs(factors.mean() - 1.0) < 0.02  # uniform on [0.6, 1.4]: sd of the mean ~0.0013
    hue = draws[:, ap.HUE]
    assert hue.min() >= -0.1 and hue.max() <= 0.1 and abs(hue.mean()) < 0.005
    order = draws[:, ap.JITTER_ORDER:ap.JITTER_ORDER + 4]
    assert (np.sort(order, 1) == np.arange(4)).all()
    for position in range(4):  # each op equally likely at each position
        for op in range(4):
            assert_rate(order[:, position] == op, 0.25)
    sigma = draws[:, ap.BLUR_SIGMA]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and abs(sigma.mean() - 1.05) < 0.03


def test_randaugment_ops_uniform_with_signs(draws: np.ndarray) -> None:
    for slot in range(2):
        op, arg = draws[:, ap.RA_FIRST + 3 * slot], draws[:, ap.RA_FIRST + 3 * slot + 2]
        for index, name in enumerate(ap.RA_OPS):
            assert_rate(op == index, 0.1)
            magnitude, signed = ap.randaugment_argument(name, 7)
            chosen = arg[op == index]
            assert np.allclose(np.abs(chosen), magnitude)
            if signed:
                assert_rate(chosen < 0, 0.5)


def test_crop_area_and_aspect_within_bounds() -> None:
    rng = np.random.default_rng(5)
    boxes = [draw_crop(rng, 200, 150, 0.2) for _ in range(2000)]
    area = np.array([b.width * b.height for b in boxes]) / (200 * 150)
    aspect = np.array([b.width / b.height for b in boxes])
    assert area.min() >= 0.2 * 0.97 and area.max() <= 1.0
    assert aspect.min() >= 0.75 * 0.97 and aspect.max() <= 4 / 3 * 1.03
    assert all(0 <= b.top <= 150 - b.height and 0 <= b.left <= 200 - b.width for b in boxes)
    # the same distribution as torchvision's own sampler (rejections skew it below the U(0.2, 1) mean)
    torch.manual_seed(5)
    reference = [RandomResizedCrop.get_params(torch.zeros(1, 150, 200), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)]
    reference_area = np.array([h * w for _, _, h, w in reference]) / (200 * 150)
    assert abs(area.mean() - reference_area.mean()) < 0.025  # sd of each mean ~0.005
    assert abs(np.median(aspect) - np.median([w / h for _, _, h, w in reference])) < 0.05


def test_crop_falls_back_to_central_crop_for_extreme_shapes() -> None:
    box = draw_crop(np.random.default_rng(0), 1000, 10, 1.0)  # no 3/4..4/3 box of full area fits
    assert box == (0, (1000 - 13) // 2, 10, 13)


def test_flip_probability_half() -> None:
    # left half black, right half white; with scale_min=1 the crop is the whole square image
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, 16:] = 255
    data = encode_image(pixels, "PNG")
    transform = TwoViewTransform(AugmentConfig(scale_min=1.0), 16)
    flips = []
    for i in range(300):
        crops, _ = transform(data, [sample_rng(0, 0, str(i), "view0")])
        left, right = crops[0, :, :, :4].float().mean(), crops[0, :, :, -4:].float().mean()
        assert abs(left - right) > 200
        flips.append(bool(left > right))
    assert_rate(np.array(flips), 0.5)
