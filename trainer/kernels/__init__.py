"""Dispatch between the fused kernels and their pure-torch references.

The model calls only these functions. Each has the reference's semantics; the fused path is taken when
it is enabled (`set_fused`, from `engine.fused_kernels`), Triton is importable and the tensors are on a GPU.
The Triton modules are imported only when the fused path is first taken, so this package imports (and
runs the references) without Triton. Tests call the Triton modules directly on CPU tensors through the
interpreter (TRITON_INTERPRET=1 set before importing them).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence

import torch
from torch import Tensor

from trainer.losses import cma_loss, imc_loss, lmi_loss, mlm_loss

_FUSED = False


def set_fused(enabled: bool) -> None:
    """The one global switch of the fused path (like timm's use_fused_attn)."""
    global _FUSED
    _FUSED = enabled


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _fused_path(*tensors: Tensor | None) -> bool:
    """Switched on, Triton importable and every tensor on a CUDA device."""
    return _FUSED and triton_available() and all(t.is_cuda for t in tensors if t is not None)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors if t is not None)


def queue_contrastive_losses(
    img: Tensor, txt: Tensor, img_m: Tensor, txt_m: Tensor,
    image_queue: Tensor, text_queue: Tensor, temp: Tensor, alpha: float,
    *, cma: bool = True, imc: bool = True,
) -> dict[str, Tensor]:
    """CMA (i2t, t2i) and IMC (i2i, t2t) against [batch; queue]; only the requested families are computed.
    Fused: each key set is read once for both families (the momentum features and queues get no gradient)."""
    momentum = (img_m, txt_m, image_queue, text_queue)
    if _fused_path(img, txt, *momentum, temp) and not _needs_grad(*momentum):
        from trainer.kernels import contrastive

        return contrastive.queue_contrastive_losses(img, txt, img_m, txt_m, image_queue, text_queue, temp, alpha, cma=cma, imc=imc)
    out: dict[str, Tensor] = {}
    if cma:
        out["cma_i2t"], out["cma_t2i"] = cma_loss(img, txt, img_m, txt_m, image_queue, text_queue, temp, alpha)
    if imc:
        out["imc_i2i"], out["imc_t2t"] = imc_loss(img, txt, img_m, txt_m, image_queue, text_queue, temp)
    return out


def local_mutual_information(global_feat: Tensor, local_feat: Tensor, local_mask: Tensor | None, temp: Tensor) -> Tensor:
    """LMI of TCL.md (see trainer.losses.lmi_loss). Fused: a masked log-sum-exp kernel (the locals, momentum
    features, get no gradient)."""
    if _fused_path(global_feat, local_feat, local_mask, temp) and not _needs_grad(local_feat):
        from trainer.kernels import contrastive

        return contrastive.local_mutual_information(global_feat, local_feat, local_mask, temp)
    return lmi_loss(global_feat, local_feat, local_mask, temp)


def mlm_head_loss(
    hidden: Tensor, decoder_weight: Tensor, decoder_bias: Tensor,
    teacher_logits: Tensor | None, labels: Tensor, alpha: float,
) -> Tensor:
    """MLM decoder (M x H -> M x V) plus distilled cross-entropy, on the masked positions only.
    Fused: chunked decoder + one pass of a Triton kernel per row, gradients taken in the forward."""
    if _fused_path(hidden, decoder_weight, decoder_bias, teacher_logits, labels):
        from trainer.kernels import mlm_head

        return mlm_head.mlm_head_loss(hidden, decoder_weight, decoder_bias, teacher_logits, labels, alpha)
    logits = hidden @ decoder_weight.t() + decoder_bias
    return mlm_loss(logits, teacher_logits, labels, alpha)


def ema_update_(momentum_params: Sequence[Tensor], online_params: Sequence[Tensor], m: float) -> None:
    """In place: p_m = m * p_m + (1 - m) * p for every pair (online weights in any float dtype, upcast).
    Fused: one multi-tensor Triton launch; else two torch._foreach ops."""
    tensors = [*momentum_params, *online_params]
    if _fused_path(*tensors) and all(t.is_contiguous() for t in tensors):
        from trainer.kernels import ema

        ema.ema_update_(momentum_params, online_params, m)
        return
    with torch.no_grad():
        torch._foreach_mul_(list(momentum_params), m)
        torch._foreach_add_(list(momentum_params), list(online_params), alpha=1 - m)
