"""The streaming softmax statistics kernel against a dense float64 computation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from trainer.kernels.softmax_stats import query_logsumexp, softmax_stats


def dense_stats(q: Tensor, keys: Tensor, temp: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """lse and softmax-weighted mean key over the kept columns, materialising everything, in float64."""
    logits = (q.double() @ keys.double().t() / temp.double()).masked_fill(~keep, float("-inf"))
    weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # a row with no kept column has no weights
    return torch.logsumexp(logits, dim=1), weights @ keys.double()


def draw(gen: torch.Generator, device: str, r: int, n_a: int, n_b: int, d: int) -> tuple[Tensor, Tensor, Tensor]:
    q = torch.nn.functional.normalize(torch.randn(r, d, generator=gen), dim=1)
    k_a = torch.nn.functional.normalize(torch.randn(n_a, d, generator=gen), dim=1)
    k_b = torch.nn.functional.normalize(torch.randn(n_b, d, generator=gen), dim=1)
    return q.to(device), k_a.to(device), k_b.to(device)


@pytest.mark.parametrize("splits", [1, 2, 100])
@pytest.mark.parametrize("temp_value", [0.001, 0.5])
def test_two_key_segments_match_dense(gen, device, assert_close, fp32_tol, splits, temp_value):
    q, k_a, k_b = draw(gen, device, 13, 6, 29, 20)  # 35 keys: not a multiple of any tile
    temp = torch.tensor([temp_value], device=device)
    lse, mean_key = softmax_stats(q, k_a, k_b, temp, splits=splits)
    keep = torch.ones(13, 35, dtype=torch.bool, device=device)
    ref_lse, ref_mean = dense_stats(q, torch.cat([k_a, k_b]), temp, keep)
    assert_close(lse, ref_lse, fp32_tol(1e-6), "lse")
    assert_close(mean_key, ref_mean, fp32_tol(1e-5), "mean key")


def test_column_mask_and_group_exclusion(gen, device, assert_close, fp32_tol):
    b, k, d = 6, 3, 20
    q, locals_, _ = draw(gen, device, b, b * k, 0, d)
    valid = torch.rand(b * k, generator=gen).to(device) > 0.3
    valid[3 * k:4 * k] = False  # sample 3 is all padding
    temp = torch.tensor([0.07], device=device)
    lse, mean_key = softmax_stats(q, locals_, None, temp, column_valid=valid, group_size=k, splits=2)
    own = torch.arange(b * k, device=device)[None, :] // k == torch.arange(b, device=device)[:, None]
    ref_lse, ref_mean = dense_stats(q, locals_, temp, valid[None, :] & ~own)
    assert_close(lse, ref_lse, fp32_tol(1e-6), "lse")
    assert_close(mean_key, ref_mean, fp32_tol(1e-5), "mean key")


def test_row_without_candidates_is_empty_not_nan(device):
    q = torch.nn.functional.normalize(torch.randn(1, 16), dim=1).to(device)
    locals_ = torch.randn(4, 16, device=device)
    lse, mean_key = softmax_stats(q, locals_, None, torch.tensor([0.1], device=device), group_size=4)
    assert lse.item() == float("-inf")
    assert torch.equal(mean_key, torch.zeros_like(mean_key))


def test_result_does_not_depend_on_the_split(gen, device, assert_close, fp32_tol):
    q, k_a, k_b = draw(gen, device, 5, 4, 70, 32)
    temp = torch.tensor([0.02], device=device)
    one = softmax_stats(q, k_a, k_b, temp, splits=1)
    for splits in (3, 5):
        many = softmax_stats(q, k_a, k_b, temp, splits=splits)
        assert_close(many[0], one[0], fp32_tol(1e-6), f"lse, {splits} splits")
        assert_close(many[1], one[1], fp32_tol(1e-6), f"mean key, {splits} splits")


@pytest.mark.parametrize("temp_value", [0.001, 0.5])
def test_gradients_of_queries_and_temperature(gen, device, assert_close, fp32_tol, temp_value):
    q, k_a, k_b = draw(gen, device, 9, 5, 21, 24)
    upstream = torch.randn(9, generator=gen).to(device)
    q.requires_grad_()
    temp = torch.tensor([temp_value], device=device, requires_grad=True)
    lse, _ = query_logsumexp(q, k_a, k_b, temp, splits=2)
    grad_q, grad_t = torch.autograd.grad((lse * upstream).sum(), [q, temp])

    q64 = q.detach().double().requires_grad_()
    t64 = temp.detach().double().requires_grad_()
    ref = torch.logsumexp(q64 @ torch.cat([k_a, k_b]).double().t() / t64, dim=1)
    ref_q, ref_t = torch.autograd.grad((ref * upstream.double()).sum(), [q64, t64])
    assert_close(grad_q, ref_q, fp32_tol(1e-5), "d/dq")
    scale = float((upstream.double().abs().cpu() * ref.detach().abs().cpu()).sum()) / temp_value  # before cancellation
    assert_close(grad_t, ref_t, fp32_tol(1e-5), "d/dtemp", scale=scale)


def test_bad_inputs_are_named(device):
    q = torch.randn(3, 8, device=device)
    with pytest.raises(ValueError, match="queries are"):
        softmax_stats(q, torch.randn(4, 9, device=device), None, torch.tensor([0.1], device=device))
    with pytest.raises(ValueError, match="temp must have one element"):
        softmax_stats(q, torch.randn(4, 8, device=device), None, torch.tensor([0.1, 0.2], device=device))
    with pytest.raises(ValueError, match="no gradient to the keys"):
        query_logsumexp(q, torch.randn(4, 8, device=device, requires_grad=True), None, torch.tensor([0.1], device=device))
