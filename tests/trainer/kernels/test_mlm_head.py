"""Fused MLM decoder + distilled cross-entropy against decoder matmul + trainer.losses.mlm_loss."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from trainer import kernels
from trainer.kernels import mlm_head
from trainer.losses import IGNORE_INDEX, mlm_loss

M, H, V = 7, 24, 50  # V is not a multiple of the vocabulary tile


def reference(hidden: Tensor, weight: Tensor, bias: Tensor, teacher: Tensor | None, labels: Tensor, alpha: float) -> Tensor:
    return mlm_loss(hidden @ weight.t() + bias, teacher, labels, alpha)


def draw(gen, device, dtype=torch.float32, ignored=(1, 4)) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    hidden = torch.randn(M, H, generator=gen).to(device, dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=gen) / H**0.5).to(device, dtype).requires_grad_()
    bias = (torch.randn(V, generator=gen) * 0.1).to(device, dtype).requires_grad_()
    teacher = (torch.randn(M, V, generator=gen) * 3).to(device)
    labels = torch.randint(0, V, (M,), generator=gen)
    labels[list(ignored)] = IGNORE_INDEX
    return hidden, weight, bias, teacher, labels.to(device)


def check(gen, device, assert_close, *, alpha, with_teacher, chunk_rows, ignored=(1, 4), tol_value=1e-6, tol_grad=1e-5):
    hidden, weight, bias, teacher, labels = draw(gen, device, ignored=ignored)
    teacher = teacher if with_teacher else None
    fused = mlm_head.mlm_head_loss(hidden, weight, bias, teacher, labels, alpha, chunk_rows=chunk_rows)
    ref = reference(hidden, weight, bias, teacher, labels, alpha)
    assert_close(fused, ref, tol_value, "loss")
    for got, want, what in zip(torch.autograd.grad(fused, [hidden, weight, bias]), torch.autograd.grad(ref, [hidden, weight, bias]),
                               ["hidden", "weight", "bias"]):
        assert_close(got, want, tol_grad, f"d/d{what}")


@pytest.mark.parametrize("chunk_rows", [3, 64])
@pytest.mark.parametrize("alpha,with_teacher", [(0.0, True), (0.0, False), (0.4, True)])
def test_matches_reference(gen, device, assert_close, alpha, with_teacher, chunk_rows):
    check(gen, device, assert_close, alpha=alpha, with_teacher=with_teacher, chunk_rows=chunk_rows)


def test_every_row_ignored_gives_zero_loss_and_gradient(gen, device):
    hidden, weight, bias, teacher, labels = draw(gen, device, ignored=range(M))
    loss = mlm_head.mlm_head_loss(hidden, weight, bias, teacher, labels, 0.4)
    assert loss.item() == 0.0
    grad_h, grad_w, grad_b = torch.autograd.grad(loss, [hidden, weight, bias])
    assert not grad_h.any() and not grad_w.any() and not grad_b.any()


def test_upstream_gradient_scales_the_saved_gradients(gen, device, assert_close):
    """The gradients are taken in the forward: the backward must still honour the loss weight."""
    hidden, weight, bias, teacher, labels = draw(gen, device)
    fused = mlm_head.mlm_head_loss(hidden, weight, bias, teacher, labels, 0.4, chunk_rows=4)
    ref = reference(hidden, weight, bias, teacher, labels, 0.4)
    assert_close(torch.autograd.grad(2.5 * fused, hidden)[0], torch.autograd.grad(2.5 * ref, hidden)[0], 1e-5, "d/dhidden")


def test_without_autograd_only_the_loss(gen, device, assert_close):
    hidden, weight, bias, teacher, labels = draw(gen, device)
    with torch.no_grad():
        fused = mlm_head.mlm_head_loss(hidden, weight, bias, teacher, labels, 0.4)
        assert_close(fused, reference(hidden, weight, bias, teacher, labels, 0.4), 1e-6, "loss")
    assert not fused.requires_grad


def test_bf16_inputs(gen, device, assert_close):
    """bf16 decoder and hidden states: the same bf16 logits (up to the bias rounding) and bf16 gradients."""
    hidden, weight, bias, teacher, labels = (t.detach().to(torch.bfloat16) if t.is_floating_point() else t for t in draw(gen, device))
    for t in (hidden, weight, bias):
        t.requires_grad_()
    fused = mlm_head.mlm_head_loss(hidden, weight, bias, teacher, labels, 0.4, chunk_rows=4)
    ref = reference(hidden, weight, bias, teacher, labels, 0.4)
    assert_close(fused, ref, 1e-2, "loss")
    for got, want, what in zip(torch.autograd.grad(fused, [hidden, weight, bias]), torch.autograd.grad(ref, [hidden, weight, bias]),
                               ["hidden", "weight", "bias"]):
        assert got.dtype == torch.bfloat16
        assert_close(got, want, 3e-2, f"d/d{what}")


def test_bad_inputs_are_named(gen, device):
    hidden, weight, bias, teacher, labels = draw(gen, device)
    with pytest.raises(ValueError, match="needs the teacher's logits"):
        mlm_head.mlm_head_loss(hidden, weight, bias, None, labels, 0.4)
    with pytest.raises(ValueError, match="teacher_logits"):
        mlm_head.mlm_head_loss(hidden, weight, bias, teacher[:, :-1], labels, 0.4)
    with pytest.raises(ValueError, match="do not fit"):
        mlm_head.mlm_head_loss(hidden, weight[:, :-1], bias, teacher, labels, 0.4)


@pytest.mark.gpu
def test_dispatch_under_bf16_autocast_on_cuda(gen, assert_close):
    hidden, weight, bias, teacher, labels = draw(gen, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = kernels.mlm_head_loss(hidden, weight, bias, teacher, labels, 0.4)
        kernels.set_fused(True)
        try:
            fused = kernels.mlm_head_loss(hidden, weight, bias, teacher, labels, 0.4)
        finally:
            kernels.set_fused(False)
    assert_close(fused, ref, 1e-2, "loss")
    for got, want, what in zip(torch.autograd.grad(fused, [hidden, weight, bias]), torch.autograd.grad(ref, [hidden, weight, bias]),
                               ["hidden", "weight", "bias"]):
        assert_close(got, want, 3e-2, f"d/d{what}")
