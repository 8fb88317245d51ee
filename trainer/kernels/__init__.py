"""Dispatch between the fused kernels and their pure-torch references.

The model calls only these functions. Each has the reference's semantics; the fused path is taken when
it is enabled (`set_fused`, from `engine.fused_kernels`), Triton is importable and the tensors are on a GPU.
"""

from __future__ import annotations

from torch import Tensor

from trainer.losses import cma_loss, imc_loss, lmi_loss, mlm_loss

_FUSED = False


def set_fused(enabled: bool) -> None:
    """The one global switch of the fused path (like timm's use_fused_attn)."""
    global _FUSED
    _FUSED = enabled


def queue_contrastive_losses(
    img: Tensor, txt: Tensor, img_m: Tensor, txt_m: Tensor,
    image_queue: Tensor, text_queue: Tensor, temp: Tensor, alpha: float,
    *, cma: bool = True, imc: bool = True,
) -> dict[str, Tensor]:
    """CMA (i2t, t2i) and IMC (i2i, t2t) against [batch; queue]; only the requested families are computed."""
    out: dict[str, Tensor] = {}
    if cma:
        out["cma_i2t"], out["cma_t2i"] = cma_loss(img, txt, img_m, txt_m, image_queue, text_queue, temp, alpha)
    if imc:
        out["imc_i2i"], out["imc_t2t"] = imc_loss(img, txt, img_m, txt_m, image_queue, text_queue, temp)
    return out


def local_mutual_information(global_feat: Tensor, local_feat: Tensor, local_mask: Tensor | None, temp: Tensor) -> Tensor:
    """LMI of TCL.md (see trainer.losses.lmi_loss)."""
    return lmi_loss(global_feat, local_feat, local_mask, temp)


def mlm_head_loss(
    hidden: Tensor, decoder_weight: Tensor, decoder_bias: Tensor,
    teacher_logits: Tensor | None, labels: Tensor, alpha: float,
) -> Tensor:
    """MLM decoder (M x H -> M x V) plus distilled cross-entropy, on the masked positions only."""
    logits = hidden @ decoder_weight.t() + decoder_bias
    return mlm_loss(logits, teacher_logits, labels, alpha)
