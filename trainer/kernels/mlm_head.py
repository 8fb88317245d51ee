"""The MLM decoder fused with distilled cross-entropy, Liger style (FusedLinearCrossEntropy).

For masked rows h (M x H), decoder W (V x H), b (V), teacher logits t (M x V) and labels y:
    z = h W^T + b,  loss = sum over valid rows of (1 - alpha) (lse(z) - z_y) + alpha (lse(z) - sum_v q_v z_v)
divided by the number of valid rows, q = softmax(t) (no gradient). dloss/dz = (p - (1 - alpha) onehot(y)
- alpha q) / count, p = softmax(z). The rows are processed in chunks: cuBLAS computes a chunk's logits,
one Triton kernel per row reads them (and the teacher's) once for the loss and overwrites them with
dloss/dz, and the chunk's gradients of h, W and b are taken right away. So the forward already holds
the gradients (the backward only scales them), the logits exist for one chunk at a time, and no
softmax, log-softmax or one-hot of M x V is ever stored. The valid-row count stays on the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from trainer.kernels.launch import check_tensors
from trainer.losses import IGNORE_INDEX


@triton.jit
def _distilled_ce_kernel(
    logits_ptr, teacher_ptr, labels_ptr, loss_ptr, inv_count_ptr, alpha, V,
    stride_logits, stride_teacher,
    HAS_TEACHER: tl.constexpr, WRITE_GRAD: tl.constexpr, IGNORE: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = logits_ptr + row * stride_logits
    t_row = teacher_ptr + row * stride_teacher
    label = tl.load(labels_ptr + row)
    valid = label != IGNORE
    label = tl.where(valid, label, 0)

    # pass 1: online lse of the student, lse of the teacher and the teacher-weighted sum of z
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    m_t = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s_t = tl.zeros([BLOCK_V], tl.float32)
    w_t = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        ok = cols < V
        z = tl.load(z_row + cols, mask=ok, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, z)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_safe) + tl.exp(z - m_safe)
        m = m_new
        if HAS_TEACHER:
            t = tl.load(t_row + cols, mask=ok, other=float("-inf")).to(tl.float32)
            mt_new = tl.maximum(m_t, t)
            mt_safe = tl.where(mt_new == float("-inf"), 0.0, mt_new)
            scale = tl.exp(m_t - mt_safe)
            e = tl.exp(t - mt_safe)
            s_t = s_t * scale + e
            w_t = w_t * scale + e * tl.where(ok, z, 0.0)
            m_t = mt_new
    top = tl.max(m, axis=0)
    lse = top + tl.log(tl.sum(s * tl.exp(m - top), axis=0))
    z_label = tl.load(z_row + label).to(tl.float32)
    loss = lse - z_label
    if HAS_TEACHER:
        top_t = tl.max(m_t, axis=0)
        lse_t = top_t + tl.log(tl.sum(s_t * tl.exp(m_t - top_t), axis=0))
        soft = tl.sum(w_t * tl.exp(m_t - top_t), axis=0) / tl.sum(s_t * tl.exp(m_t - top_t), axis=0)
        loss = (1.0 - alpha) * loss + alpha * (lse - soft)
    tl.store(loss_ptr + row, tl.where(valid, loss, 0.0))

    # pass 2: overwrite the logits with dloss/dz
    if WRITE_GRAD:
        scale_row = tl.where(valid, tl.load(inv_count_ptr), 0.0)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            ok = cols < V
            z = tl.load(z_row + cols, mask=ok, other=float("-inf")).to(tl.float32)
            grad = tl.exp(z - lse) - tl.where(cols == label, 1.0 - alpha, 0.0)
            if HAS_TEACHER:
                t = tl.load(t_row + cols, mask=ok, other=float("-inf")).to(tl.float32)
                grad = grad - alpha * tl.exp(t - lse_t)
            tl.store(z_row + cols, (grad * scale_row).to(z_row.dtype.element_ty), mask=ok)


class _MLMHeadLoss(torch.autograd.Function):
    """Loss in the forward together with its gradients; the backward scales them by the upstream grad."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, hidden: Tensor, weight: Tensor, bias: Tensor,
        teacher_logits: Tensor | None, labels: Tensor, alpha: float, chunk_rows: int, autocast_dtype: torch.dtype | None,
    ) -> Tensor:
        name = "mlm_head_loss"
        tensors = [hidden, weight, bias, labels] + ([teacher_logits] if teacher_logits is not None else [])
        check_tensors(_distilled_ce_kernel, name, *(t for t in tensors if t is not labels))
        m, h = hidden.shape
        v = weight.shape[0]
        if weight.shape != (v, h) or bias.shape != (v,) or labels.shape != (m,):
            raise ValueError(f"{name}: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, bias {tuple(bias.shape)}"
                             f" and labels {tuple(labels.shape)} do not fit (M x H, V x H, V, M)")
        if teacher_logits is not None and teacher_logits.shape != (m, v):
            raise ValueError(f"{name}: teacher_logits {tuple(teacher_logits.shape)} must be ({m}, {v})")
        has_teacher = alpha != 0
        needs = ctx.needs_input_grad
        write_grad = any(needs[:3])

        dtype = autocast_dtype or torch.promote_types(hidden.dtype, weight.dtype)
        w, b_, x = weight.to(dtype), bias.to(dtype), hidden.to(dtype)
        inv_count = 1.0 / (labels != IGNORE_INDEX).sum().clamp(min=1).float().reshape(1)
        row_loss = torch.empty(m, device=hidden.device, dtype=torch.float32)
        grad_hidden = torch.empty(m, h, device=hidden.device, dtype=dtype) if needs[0] else None
        grad_weight = torch.zeros(v, h, device=hidden.device, dtype=torch.float32) if needs[1] else None
        grad_bias = torch.zeros(v, device=hidden.device, dtype=torch.float32) if needs[2] else None
        block_v = max(16, min(1024, triton.next_power_of_2(v) // 4))  # several tiles even for a toy vocabulary
        for start in range(0, m, chunk_rows):
            rows = slice(start, min(start + chunk_rows, m))
            logits = torch.addmm(b_, x[rows], w.t())
            teacher = teacher_logits[rows].contiguous() if has_teacher else logits
            _distilled_ce_kernel[(logits.shape[0],)](
                logits, teacher, labels[rows].contiguous(), row_loss[rows], inv_count, float(alpha) if has_teacher else 0.0, v,
                logits.stride(0), teacher.stride(0),
                HAS_TEACHER=has_teacher, WRITE_GRAD=write_grad, IGNORE=IGNORE_INDEX, BLOCK_V=block_v,
            )
            if grad_hidden is not None:
                grad_hidden[rows] = logits @ w
            if grad_weight is not None:
                grad_weight += (logits.t() @ x[rows]).float()
            if grad_bias is not None:
                grad_bias += logits.float().sum(dim=0)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None))
        ctx.grad_slots = (needs[0], needs[1], needs[2])  # type: ignore[attr-defined]
        ctx.input_dtypes = (hidden.dtype, weight.dtype, bias.dtype)  # type: ignore[attr-defined]
        return row_loss.sum() * inv_count.reshape(())

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)  # type: ignore[attr-defined]
        grads = [
            (next(saved) * grad_loss).to(dtype) if needed else None
            for needed, dtype in zip(ctx.grad_slots, ctx.input_dtypes)  # type: ignore[attr-defined]
        ]
        return (*grads, None, None, None, None, None)


def mlm_head_loss(
    hidden: Tensor, decoder_weight: Tensor, decoder_bias: Tensor,
    teacher_logits: Tensor | None, labels: Tensor, alpha: float, *, chunk_rows: int = 2048,
) -> Tensor:
    """The fused counterpart of trainer.kernels.mlm_head_loss. Under autocast the decoder runs in the
    autocast dtype, as the reference's matmul would."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if alpha != 0 and teacher_logits is None:
        raise ValueError(f"MLM distillation weight alpha={alpha} needs the teacher's logits, got None")
    device_type = hidden.device.type
    autocast_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    with torch.autocast(device_type, enabled=False):
        return _MLMHeadLoss.apply(hidden, decoder_weight, decoder_bias, teacher_logits, labels, alpha, chunk_rows, autocast_dtype)
