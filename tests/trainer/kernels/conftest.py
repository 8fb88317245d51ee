"""Kernel tests run on the GPU when there is one, else on CPU tensors through the Triton interpreter
(TRITON_INTERPRET is set for the whole session by tests/conftest.py, before any kernel module is imported)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _skip_gpu_only(request: pytest.FixtureRequest) -> None:
    """Tests marked `gpu` check the compiled kernels on CUDA; elsewhere they skip."""
    if request.node.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture
def gen() -> torch.Generator:
    """Fresh random inputs on every run; the seed is printed, so pytest shows it with a failure."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    return torch.Generator().manual_seed(seed)


def relative_error(actual: torch.Tensor, expected: torch.Tensor, scale: float = 0.0) -> float:
    """||actual - expected|| / max(||expected||, scale) in float64; NaN anywhere is an infinite error.
    `scale` is the size of the terms a result sums, for results that cancel (the temperature gradient):
    rounding errors are relative to the terms, not to what is left of them."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != {tuple(e.shape)}")
    finite = e.isfinite()
    if not torch.equal(a.isfinite(), finite) or not torch.equal(a[~finite], e[~finite]):
        return float("inf")  # NaN, or an infinity that the reference does not have
    return ((a[finite] - e[finite]).norm() / e[finite].norm().clamp(min=max(scale, 1e-30))).item()


@pytest.fixture
def fp32_tol() -> Callable[[float], float]:
    """Tolerance of an fp32 comparison: the interpreter computes in fp32 like the reference; compiled
    kernels multiply fp32 inputs with 3xTF32 (about fp32 accuracy, not the same rounding): 10x slack."""
    slack = 10.0 if DEVICE == "cuda" else 1.0
    return lambda tol: tol * slack


@pytest.fixture
def assert_close() -> Callable[..., None]:
    def check(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str = "", *, scale: float = 0.0) -> None:
        err = relative_error(actual, expected, scale)
        assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"

    return check
