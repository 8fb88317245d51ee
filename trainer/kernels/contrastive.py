"""CMA, IMC and LMI on the fused softmax statistics: the same values and gradients as trainer.losses.

Each key set is swept once for every term that uses it:
  T_all = [txt_m; text_queue]: CMA i2t (query img, soft target from img_m) and IMC t2t (query txt);
  I_all = [img_m; image_queue]: CMA t2i (query txt, soft target from txt_m) and IMC i2i (query img).
With s = q . k / temp and a target alpha * softmax(t) + (1 - alpha) * onehot(i), the soft cross-entropy
of a row is lse(s) - (1 - alpha) * s_ii - alpha * q . mean_key(t) / temp: only lse needs the keys'
pass, the diagonal is a row-wise dot with the batch keys. Gradients reach the online features and temp;
the momentum features and queues get none (the dispatcher falls back to the reference when they need one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.kernels.softmax_stats import query_logsumexp


def _diagonal_logits(query: Tensor, batch_keys: Tensor, temp: Tensor) -> Tensor:
    """s_ii = q_i . k_i / temp for the in-batch positives, in fp32."""
    return (query.float() * batch_keys.float()).sum(dim=1) / temp.float()


def _against_keys(
    batch_keys: Tensor, queue: Tensor, temp: Tensor, alpha: float,
    cma_query: Tensor | None, teacher_query: Tensor, imc_query: Tensor | None, splits: int | None,
) -> tuple[Tensor | None, Tensor | None]:
    """(CMA loss, IMC loss) of the queries that share the key set [batch_keys; queue]; None where not asked."""
    soft = cma_query is not None and alpha > 0
    rows = [q for q in (cma_query, teacher_query if soft else None, imc_query) if q is not None]
    lse, mean_key = query_logsumexp(torch.cat(rows), batch_keys, queue, temp, splits=splits)
    b = batch_keys.shape[0]
    cma = imc = None
    offset = 0
    if cma_query is not None:
        row_loss = lse[:b] - (1 - alpha) * _diagonal_logits(cma_query, batch_keys, temp)
        if soft:
            teacher_mean = mean_key[b:2 * b]
            row_loss = row_loss - alpha * (cma_query.float() * teacher_mean).sum(dim=1) / temp.float()
        cma = row_loss.mean()
        offset = 2 * b if soft else b
    if imc_query is not None:
        imc = (lse[offset:offset + b] - _diagonal_logits(imc_query, batch_keys, temp)).mean()
    return cma, imc


def queue_contrastive_losses(
    img: Tensor, txt: Tensor, img_m: Tensor, txt_m: Tensor,
    image_queue: Tensor, text_queue: Tensor, temp: Tensor, alpha: float,
    *, cma: bool = True, imc: bool = True, splits: int | None = None,
) -> dict[str, Tensor]:
    """The fused counterpart of trainer.kernels.queue_contrastive_losses (same keys and values)."""
    out: dict[str, Tensor] = {}
    if not (cma or imc):
        return out
    i2t, t2t = _against_keys(txt_m, text_queue, temp, alpha, img if cma else None, img_m, txt if imc else None, splits)
    t2i, i2i = _against_keys(img_m, image_queue, temp, alpha, txt if cma else None, txt_m, img if imc else None, splits)
    if cma:
        out["cma_i2t"], out["cma_t2i"] = i2t, t2i
    if imc:
        out["imc_i2i"], out["imc_t2t"] = i2i, t2t
    return out


def local_mutual_information(
    global_feat: Tensor, local_feat: Tensor, local_mask: Tensor | None, temp: Tensor, *, splits: int | None = None,
) -> Tensor:
    """The fused counterpart of trainer.losses.lmi_loss: the negatives' masked log-sum-exp comes from the
    kernel (locals of the same sample and padded locals dropped), the positives are a row-wise dot."""
    b, k, d = local_feat.shape
    valid = torch.ones(b, k, dtype=torch.bool, device=local_feat.device) if local_mask is None else local_mask.bool()
    neg_lse, _ = query_logsumexp(
        global_feat, local_feat.reshape(b * k, d), None, temp, column_valid=valid.reshape(-1), group_size=k, splits=splits,
    )
    positives = torch.einsum("bd,bkd->bk", global_feat.float(), local_feat.float()) / temp.float()
    per_local = F.softplus(neg_lse[:, None] - positives).masked_fill(~valid, 0.0)
    return (per_local.sum(dim=1) / valid.sum(dim=1).clamp(min=1)).mean()
