"""The contrastive terms of TCL: CMA and IMC against [batch; queue], and LMI (global vs local).

One core, `queue_logits` + `soft_cross_entropy`, serves CMA and IMC; LMI is a matmul plus a masked
log-sum-exp. Every function computes in fp32 whatever the input dtype. Features are L2-normalised;
queues are Q x D (one row per entry); `temp` is a one-element tensor already clamped by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def queue_logits(query: Tensor, batch_keys: Tensor, queue: Tensor, temp: Tensor) -> Tensor:
    """Similarities of each query (B x D) with [batch_keys; queue] ((B + Q) x D), over temp, in fp32.
    Column i of the first B is the positive of row i."""
    keys = torch.cat([batch_keys.float(), queue.float()], dim=0)
    return query.float() @ keys.t() / temp.float()


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of -sum(targets * log_softmax(logits))."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _diagonal_targets(logits: Tensor) -> Tensor:
    """One-hot targets on the first B columns' diagonal of a B x (B + Q) logit matrix."""
    targets = torch.zeros_like(logits)
    targets.diagonal().fill_(1.0)
    return targets


def cma_loss(
    img: Tensor, txt: Tensor, img_m: Tensor, txt_m: Tensor,
    image_queue: Tensor, text_queue: Tensor, temp: Tensor, alpha: float,
) -> tuple[Tensor, Tensor]:
    """Cross-modal alignment (ALBEF's ITC with momentum distillation): (loss_i2t, loss_t2i).

    Targets mix the momentum model's softmax (weight alpha, no gradient) with the one-hot positive."""
    s_i2t = queue_logits(img, txt_m, text_queue, temp)
    s_t2i = queue_logits(txt, img_m, image_queue, temp)
    with torch.no_grad():
        hard = _diagonal_targets(s_i2t)
        t_i2t = alpha * F.softmax(queue_logits(img_m, txt_m, text_queue, temp), dim=1) + (1 - alpha) * hard
        t_t2i = alpha * F.softmax(queue_logits(txt_m, img_m, image_queue, temp), dim=1) + (1 - alpha) * hard
    return soft_cross_entropy(s_i2t, t_i2t), soft_cross_entropy(s_t2i, t_t2i)


def imc_loss(
    img: Tensor, txt: Tensor, img_m: Tensor, txt_m: Tensor,
    image_queue: Tensor, text_queue: Tensor, temp: Tensor,
) -> tuple[Tensor, Tensor]:
    """Intra-modal contrast: (loss_i2i, loss_t2t). The positive of an online image feature is the
    momentum feature of the other view; of a text feature, the momentum feature of the same caption."""
    s_i2i = queue_logits(img, img_m, image_queue, temp)
    s_t2t = queue_logits(txt, txt_m, text_queue, temp)
    labels = torch.arange(img.shape[0], device=img.device)
    return F.cross_entropy(s_i2i, labels), F.cross_entropy(s_t2t, labels)


def lmi_loss(global_feat: Tensor, local_feat: Tensor, local_mask: Tensor | None, temp: Tensor) -> Tensor:
    """Local mutual information between each global feature (B x D) and the locals (B x K x D).

    For local k of sample i the positive logit is g_i . l_ik / temp; the negatives are every valid local
    of the other samples in the batch. Each (i, k) contributes -log softmax at the positive; padded
    positives are ignored, padded negatives excluded. Per sample the mean over its valid locals, then the
    mean over samples (which is the mean over B x K when nothing is masked). Computed as one B x BK matmul
    and a masked log-sum-exp per row: log(e^pos + sum e^neg) - pos = softplus(lse(neg) - pos).
    """
    b, k, d = local_feat.shape
    g = global_feat.float()
    locals_flat = local_feat.float().reshape(b * k, d)
    logits = (g @ locals_flat.t() / temp.float()).view(b, b, k)  # (query i, sample j, local k)
    positives = logits.diagonal(dim1=0, dim2=1).t()  # (B, K): g_i . l_ik / temp
    valid = torch.ones(b, k, dtype=torch.bool, device=g.device) if local_mask is None else local_mask.bool()
    other = ~torch.eye(b, dtype=torch.bool, device=g.device)
    negative = other[:, :, None] & valid[None, :, :]  # (i, j, k): a negative of query i
    neg_lse = logits.masked_fill(~negative, float("-inf")).view(b, b * k).logsumexp(dim=1)  # (B,)
    per_local = F.softplus(neg_lse[:, None] - positives).masked_fill(~valid, 0.0)
    per_sample = per_local.sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    return per_sample.mean()
