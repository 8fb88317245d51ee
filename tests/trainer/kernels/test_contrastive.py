"""Fused CMA / IMC / LMI against the reference losses of trainer.losses: values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from trainer import kernels
from trainer.kernels import contrastive
from trainer.losses import cma_loss, imc_loss, lmi_loss

B, D, Q, K = 5, 24, 37, 3  # B, Q and B x K are not multiples of any tile


def features(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, device: str, grad: bool = False) -> Tensor:
    return F.normalize(torch.randn(shape, generator=gen), dim=-1).to(device=device, dtype=dtype).requires_grad_(grad)


def reference_terms(img, txt, img_m, txt_m, image_queue, text_queue, temp, alpha, *, cma, imc) -> dict[str, Tensor]:
    out = {}
    if cma:
        out["cma_i2t"], out["cma_t2i"] = cma_loss(img, txt, img_m, txt_m, image_queue, text_queue, temp, alpha)
    if imc:
        out["imc_i2i"], out["imc_t2t"] = imc_loss(img, txt, img_m, txt_m, image_queue, text_queue, temp)
    return out


def mixed_grads(terms: dict[str, Tensor], weights: list[float], inputs: list[Tensor]) -> tuple[Tensor, ...]:
    """Gradients of a random mix of the terms, so that a wrong gradient of any one term shows."""
    total = sum(w * terms[name] for w, name in zip(weights, sorted(terms)))
    return torch.autograd.grad(total, inputs)


def temp_grad_scale(terms: dict[str, Tensor], weights: list[float], temp: Tensor) -> float:
    """The size of d(loss)/d(temp) before its positive and negative parts cancel: |loss| / temp."""
    return sum(w * abs(float(terms[name].detach())) for w, name in zip(weights, sorted(terms))) / float(temp.detach())


def check_queue_terms(gen, device, assert_close, *, dtype, temp_value, alpha, cma, imc, tol_value, tol_grad, fused_fn):
    img, txt = features(gen, (B, D), dtype, device, grad=True), features(gen, (B, D), dtype, device, grad=True)
    img_m, txt_m = features(gen, (B, D), dtype, device), features(gen, (B, D), dtype, device)
    image_queue, text_queue = features(gen, (Q, D), dtype, device), features(gen, (Q, D), dtype, device)
    temp = torch.tensor([temp_value], device=device, requires_grad=True)
    args = (img, txt, img_m, txt_m, image_queue, text_queue, temp, alpha)
    fused = fused_fn(*args, cma=cma, imc=imc)
    ref = reference_terms(*args, cma=cma, imc=imc)
    assert sorted(fused) == sorted(ref)
    for name in ref:
        assert_close(fused[name], ref[name], tol_value, name)
    weights = torch.rand(len(ref), generator=gen).tolist()
    got = mixed_grads(fused, weights, [img, txt, temp])
    want = mixed_grads(ref, weights, [img, txt, temp])
    assert_close(got[0], want[0], tol_grad, "d/dimg")
    assert_close(got[1], want[1], tol_grad, "d/dtxt")
    assert_close(got[2], want[2], tol_grad, "d/dtemp", scale=temp_grad_scale(ref, weights, temp))


@pytest.mark.parametrize("cma,imc", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("temp_value", [0.001, 0.5])
def test_queue_terms_match_reference(gen, device, assert_close, fp32_tol, temp_value, alpha, cma, imc):
    check_queue_terms(gen, device, assert_close, dtype=torch.float32, temp_value=temp_value, alpha=alpha, cma=cma, imc=imc,
                      tol_value=fp32_tol(1e-5), tol_grad=fp32_tol(1e-4), fused_fn=lambda *a, **kw: contrastive.queue_contrastive_losses(*a, **kw, splits=2))


@pytest.mark.parametrize("temp_value", [0.001, 0.07])
def test_queue_terms_bf16_inputs(gen, device, assert_close, temp_value):
    """bf16 features and queues: exact products in the interpreter (upcast at load); on a GPU bf16 operands
    on the tensor cores with fp32 accumulation, and bf16 softmax weights for the gradient. Gradients of
    bf16 inputs are bf16 on both sides (rounded on different paths): a few bf16 ulps apart."""
    exact = device == "cpu"
    check_queue_terms(gen, device, assert_close, dtype=torch.bfloat16, temp_value=temp_value, alpha=0.4, cma=True, imc=True,
                      tol_value=1e-5 if exact else 2e-3, tol_grad=1e-2 if exact else 2e-2, fused_fn=contrastive.queue_contrastive_losses)


def lmi_inputs(gen, device, dtype, masked: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    global_feat = features(gen, (B, D), dtype, device, grad=True)
    local_feat = features(gen, (B, K, D), dtype, device)
    mask = None
    if masked:
        mask = torch.rand(B, K, generator=gen) > 0.4
        mask[:, 0] = True
        mask[2] = False  # a sample with only padding: no positive, and no negative for the others
        mask = mask.to(device)
    return global_feat, local_feat, mask, torch.tensor([0.0], device=device)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("temp_value", [0.001, 0.5])
def test_lmi_matches_reference(gen, device, assert_close, fp32_tol, temp_value, masked):
    global_feat, local_feat, mask, temp = lmi_inputs(gen, device, torch.float32, masked)
    temp = torch.tensor([temp_value], device=device, requires_grad=True)
    fused = contrastive.local_mutual_information(global_feat, local_feat, mask, temp, splits=2)
    ref = lmi_loss(global_feat, local_feat, mask, temp)
    assert_close(fused, ref, fp32_tol(1e-5), "LMI")
    got = torch.autograd.grad(fused, [global_feat, temp])
    want = torch.autograd.grad(ref, [global_feat, temp])
    assert_close(got[0], want[0], fp32_tol(1e-4), "d/dglobal")
    assert_close(got[1], want[1], fp32_tol(1e-4), "d/dtemp", scale=abs(float(ref.detach())) / temp_value)


def test_dispatch_without_gpu_uses_the_reference(gen, device, assert_close):
    """The switch alone does not route CPU tensors to Triton: the dispatch result is the reference's."""
    global_feat, local_feat, mask, _ = lmi_inputs(gen, "cpu", torch.float32, masked=True)
    temp = torch.tensor([0.07])
    kernels.set_fused(True)
    try:
        got = kernels.local_mutual_information(global_feat, local_feat, mask, temp)
    finally:
        kernels.set_fused(False)
    assert torch.equal(got, lmi_loss(global_feat, local_feat, mask, temp))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dispatch_takes_the_fused_path_on_cuda(gen, assert_close, fp32_tol, dtype):
    exact = dtype == torch.float32

    def dispatched(*args, cma, imc):
        kernels.set_fused(True)
        try:
            return kernels.queue_contrastive_losses(*args, cma=cma, imc=imc)
        finally:
            kernels.set_fused(False)

    check_queue_terms(gen, "cuda", assert_close, dtype=dtype, temp_value=0.07, alpha=0.4, cma=True, imc=True,
                      tol_value=fp32_tol(1e-5) if exact else 2e-3, tol_grad=fp32_tol(1e-4) if exact else 2e-2, fused_fn=dispatched)
    global_feat, local_feat, mask, _ = lmi_inputs(gen, "cuda", dtype, masked=True)
    temp = torch.tensor([0.07], device="cuda")
    kernels.set_fused(True)
    try:
        fused = kernels.local_mutual_information(global_feat, local_feat, mask, temp)
    finally:
        kernels.set_fused(False)
    assert_close(fused, lmi_loss(global_feat, local_feat, mask, temp), fp32_tol(1e-5) if exact else 2e-3, "LMI")
