"""MLM masking on the device, and the sync-free gather of the masked positions."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from trainer.losses import IGNORE_INDEX


def mask_tokens(
    input_ids: Tensor, *, vocab_size: int, probability: float, pad_id: int, cls_id: int, mask_id: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking: each token except PAD and CLS is chosen with `probability`; of those 80% become
    [MASK], 10% a random token, 10% stay. Returns (masked_ids, labels) with IGNORE_INDEX where unchosen."""
    draw = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
    chosen = (draw < probability) & (input_ids != pad_id) & (input_ids != cls_id)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    kind = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
    random_tokens = torch.randint(vocab_size, input_ids.shape, device=input_ids.device, generator=generator)
    masked = torch.where(chosen & (kind < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_tokens, masked)
    return masked, labels


def masked_capacity(num_tokens: int, probability: float) -> int:
    """Upper bound on the masked tokens of a batch of `num_tokens` (mean + 7 sigma of the binomial), so
    the masked positions can be gathered into a fixed-size tensor without asking the device for the count."""
    mean = num_tokens * probability
    return min(num_tokens, math.ceil(mean + 7 * math.sqrt(mean * (1 - probability)) + 8))


def masked_positions(labels: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
    """Flat indices of the masked tokens, padded to `capacity`, and their labels (IGNORE_INDEX on padding).
    A stable sort puts the masked positions first; no host synchronisation."""
    flat = labels.reshape(-1)
    order = torch.argsort((flat == IGNORE_INDEX).to(torch.int8), stable=True)[:capacity]
    return order, flat.index_select(0, order)
