"""The tiny TCL model with every fused kernel (Triton interpreter on CPU) against the same model on
the torch references: the EMA, each loss term and every parameter gradient of one step."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.trainer.model.tcl_testing import build_tiny, forward_step, random_batch, tiny_model_config
from trainer import kernels


def one_step(model, teacher, queues, batch, alpha):
    """EMA into a copy of the teacher, then forward and backward; (terms, gradients, teacher weights).
    Seeded: the ITM hard negatives are drawn from the global generator."""
    torch.manual_seed(0)
    teacher = copy.deepcopy(teacher)
    teacher.update(model, 0.995)
    out, _, _ = forward_step(model, teacher, queues, batch, alpha=alpha)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out["loss"], params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return out, torch.cat([g.flatten() for g in grads]), torch.cat([p.flatten() for p in teacher.parameters()])


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_fused_step_matches_reference_step(monkeypatch, device, assert_close, fp32_tol, alpha):
    cfg = tiny_model_config()  # no dropout: both steps see the same function
    cfg = cfg.model_copy(update={"text": cfg.text.model_copy(update={"vocab_size": 1000})})  # interpreter-sized
    model, teacher, queues = (m.to(device) for m in build_tiny(cfg))
    with torch.no_grad():  # the momentum copy a little away from the online weights, so the EMA moves it
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = random_batch(cfg)
    for name in ("view1", "view2", "input_ids", "attention_mask"):
        setattr(batch, name, getattr(batch, name).to(device))

    monkeypatch.setattr(kernels, "_fused_path", lambda *tensors: False)
    ref_out, ref_grads, ref_teacher = one_step(model, teacher, queues, batch, alpha)
    monkeypatch.setattr(kernels, "_fused_path", lambda *tensors: True)  # CPU tensors: the interpreter
    out, grads, fused_teacher = one_step(model, teacher, queues, batch, alpha)

    assert_close(fused_teacher, ref_teacher, 1e-7, "momentum weights after the EMA")
    assert sorted(out) == sorted(ref_out)
    for name in ref_out:
        assert_close(out[name], ref_out[name], fp32_tol(1e-5), name)
    assert_close(grads, ref_grads, fp32_tol(1e-4), "parameter gradients")
