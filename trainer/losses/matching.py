"""Image-text matching (ITM) with hard negatives, and distilled masked language modelling (MLM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def _sample_offdiagonal(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row drawn from softmax(row) restricted to the off-diagonal entries.

    Exponential race in log space: argmax_j (logit_j - log E_j), E_j ~ Exp(1), is an exact draw from
    softmax(logits). Working on logits (diagonal set to -inf) instead of zeroing a softmax means saturated
    rows (temp 0.001) keep their relative weights rather than underflowing to no mass. A row with a
    non-finite off-diagonal logit (NaN/inf input) falls back to uniform over the other indices. All on the
    device: no host synchronisation, nothing that can assert (unlike torch.multinomial)."""
    b = logits.shape[0]
    if logits.shape != (b, b) or b < 2:
        raise ValueError(f"hard-negative sampling needs a square B x B similarity with B >= 2, got {tuple(logits.shape)}")
    logits = logits.detach().float()
    diagonal = torch.eye(b, dtype=torch.bool, device=logits.device)
    bad_row = ~(torch.isfinite(logits) | diagonal).all(dim=1)
    logits = torch.where(bad_row[:, None], torch.zeros_like(logits), logits)
    noise = torch.empty_like(logits).exponential_(generator=generator)
    # The diagonal is masked after the noise: a draw of exactly 0 (log = -inf) can never revive it.
    return (logits - noise.log()).masked_fill(diagonal, float("-inf")).argmax(dim=1)


def sample_hard_negatives(
    sim_i2t: Tensor, sim_t2i: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(neg_text_idx, neg_image_idx): for each image a hard-negative text drawn from softmax(sim_i2t[i]),
    for each text a hard-negative image from softmax(sim_t2i[i]), never the positive. Inputs are this
    rank's in-batch B x B similarities over temp (no gradient)."""
    return _sample_offdiagonal(sim_i2t, generator), _sample_offdiagonal(sim_t2i, generator)


def itm_loss(itm_logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the ITM head (N x 2) against match labels (1 = matching pair), in fp32."""
    return F.cross_entropy(itm_logits.float(), labels)


def mlm_loss(student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor, alpha: float) -> Tensor:
    """Distilled MLM on the masked positions only (M x V logits, M labels; IGNORE_INDEX rows skipped):
    (1 - alpha) * CE(student, labels) + alpha * mean(-sum_v softmax(teacher)_v log_softmax(student)_v),
    the softmax taken over the vocabulary. teacher_logits may be None when alpha is 0."""
    if alpha != 0 and teacher_logits is None:
        raise ValueError(f"MLM distillation weight alpha={alpha} needs the teacher's logits, got None")
    log_p = F.log_softmax(student_logits.float(), dim=-1)
    valid = labels != IGNORE_INDEX
    count = valid.sum().clamp(min=1)
    ce = -(log_p.gather(1, labels.clamp(min=0)[:, None]).squeeze(1) * valid).sum() / count
    if alpha == 0 or teacher_logits is None:
        return ce
    with torch.no_grad():
        q = F.softmax(teacher_logits.float(), dim=-1)
    distill = (-(q * log_p).sum(dim=-1) * valid).sum() / count
    return (1 - alpha) * ce + alpha * distill
