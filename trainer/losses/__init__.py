"""TCL objectives as pure functions on tensors: the public reference and the fallback of the fused kernels."""

from __future__ import annotations

from torch import Tensor

from trainer.losses.contrastive import cma_loss, imc_loss, lmi_loss, queue_logits, soft_cross_entropy
from trainer.losses.matching import IGNORE_INDEX, itm_loss, mlm_loss, sample_hard_negatives


def weighted_total(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum(weight x term) over the terms that were computed (a skipped term has weight 0)."""
    parts = [weights[name] * value for name, value in terms.items() if weights.get(name, 0.0) != 0.0]
    if not parts:
        raise ValueError("every loss weight is 0: nothing to train")
    return sum(parts[1:], parts[0])


__all__ = [
    "IGNORE_INDEX", "cma_loss", "imc_loss", "itm_loss", "lmi_loss", "mlm_loss", "queue_logits",
    "sample_hard_negatives", "soft_cross_entropy", "weighted_total",
]
