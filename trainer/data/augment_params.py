"""The per-view parameters of the colour and RandAugment ops: drawn on the CPU, applied on the device.

Loader workers do only decode, crop and flip; every other random choice of the TCL transform is drawn
here from the sample's own generator and travels with the batch as one float32 row per view, so
that `DeviceAugment` applies the same views on any device, batched.

Row layout (P = 12 + 3 * randaugment_n):
    0 jitter on, 1 brightness, 2 contrast, 3 saturation (factors), 4 hue (shift),
    5..8 jitter order (op index 0..3 of brightness/contrast/saturation/hue at each position),
    9 grayscale on, 10 blur on, 11 blur sigma,
    then per RandAugment slot: op index into RA_OPS, applied (0/1), argument (signed where it has a sign).
"""

from __future__ import annotations

import numpy as np

from trainer.config import AugmentConfig

JITTER_ON, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4
JITTER_ORDER = 5
GRAYSCALE_ON, BLUR_ON, BLUR_SIGMA = 9, 10, 11
RA_FIRST = 12
RA_FIELDS = 3  # op, applied, argument

BLUR_SIGMA_RANGE = (0.1, 2.0)
RA_OPS = (
    "Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
)
RA_MAX_LEVEL = 10
RA_TRANSLATE_PX = 10.0
"""ALBEF's translate_const: the TranslateX/Y offset at the maximum level, in pixels (not a fraction)."""
RA_FILL = 128 / 255
"""ALBEF's replace value (128, 128, 128) for pixels that geometric ops bring in from outside."""


def num_params(randaugment_n: int) -> int:
    return RA_FIRST + RA_FIELDS * randaugment_n


def randaugment_argument(op: str, level: int) -> tuple[float, bool]:
    """ALBEF's level-to-argument mapping: (magnitude, whether a random sign applies)."""
    fraction = level / RA_MAX_LEVEL
    if op in ("Brightness", "Sharpness"):
        return fraction * 1.8 + 0.1, False
    if op in ("ShearX", "ShearY"):
        return fraction * 0.3, True
    if op in ("TranslateX", "TranslateY"):
        return fraction * RA_TRANSLATE_PX, True
    if op == "Rotate":
        return fraction * 30.0, True
    return 0.0, False


def draw_view_params(rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """One view's parameters, float32 (P,). The number of draws is fixed, so rows never shift."""
    params = np.zeros(num_params(aug.randaugment_n), np.float32)
    params[JITTER_ON] = rng.random() < aug.color_jitter_p
    params[JITTER_ORDER:JITTER_ORDER + 4] = rng.permutation(4)
    low, high = max(0.0, 1.0 - aug.color_jitter), 1.0 + aug.color_jitter
    params[BRIGHTNESS:HUE] = rng.uniform(low, high, size=3)
    params[HUE] = rng.uniform(-aug.hue, aug.hue)
    params[GRAYSCALE_ON] = rng.random() < aug.grayscale_p
    params[BLUR_ON] = rng.random() < aug.blur_p
    params[BLUR_SIGMA] = rng.uniform(*BLUR_SIGMA_RANGE)
    for slot in range(aug.randaugment_n):
        op = int(rng.integers(len(RA_OPS)))
        applied = rng.random() < aug.randaugment_p
        negative = rng.random() < 0.5
        magnitude, signed = randaugment_argument(RA_OPS[op], aug.randaugment_m)
        base = RA_FIRST + RA_FIELDS * slot
        params[base:base + RA_FIELDS] = (op, applied, -magnitude if signed and negative else magnitude)
    return params
