"""MLM masking statistics and the fixed-capacity gather of the masked positions."""

from __future__ import annotations

import math

import torch

from tests.trainer.model.tcl_testing import CLS, MASK, PAD, VOCAB, random_batch, tiny_model_config
from trainer.losses import IGNORE_INDEX
from trainer.model import mask_tokens, masked_capacity, masked_positions


def big_batch() -> torch.Tensor:
    return random_batch(tiny_model_config(), batch=400, length=40, seed=7).input_ids


def test_mask_tokens_statistics() -> None:
    """15% of the tokens other than PAD and CLS are chosen; of those 80% become [MASK], 10% a random token,
    10% stay; labels hold the original id where chosen and IGNORE_INDEX elsewhere. Bounds are 5 sigma of
    the binomials (the draw is fixed by the generator)."""
    ids = big_batch()
    masked, labels = mask_tokens(
        ids, vocab_size=VOCAB, probability=0.15, pad_id=PAD, cls_id=CLS, mask_id=MASK,
        generator=torch.Generator().manual_seed(0),
    )
    chosen = labels != IGNORE_INDEX
    eligible = (ids != PAD) & (ids != CLS)
    assert not (chosen & ~eligible).any(), "PAD or CLS was chosen"
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen]), "an unchosen token changed"

    n = int(eligible.sum())
    rate = chosen.sum().item() / n
    assert abs(rate - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n)

    m = int(chosen.sum())
    to_mask = (masked[chosen] == MASK).sum().item() / m
    kept = (masked[chosen] == ids[chosen]).sum().item() / m
    randomised = 1 - to_mask - kept
    for share, want in ((to_mask, 0.8), (kept, 0.1), (randomised, 0.1)):
        assert abs(share - want) < 5 * math.sqrt(want * (1 - want) / m), (to_mask, kept, randomised)
    random_ids = masked[chosen][(masked[chosen] != MASK) & (masked[chosen] != ids[chosen])]
    assert random_ids.min() >= 0 and random_ids.max() < VOCAB
    assert random_ids.unique().numel() > 0.9 * random_ids.numel(), "random replacements are not spread out"


def test_mask_tokens_is_reproducible_from_its_generator() -> None:
    ids = big_batch()[:8]
    draws = [
        mask_tokens(ids, vocab_size=VOCAB, probability=0.15, pad_id=PAD, cls_id=CLS, mask_id=MASK,
                    generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_masked_capacity_by_hand() -> None:
    # 1000 tokens at 15%: mean 150, sigma sqrt(127.5) = 11.29; 150 + 7 * 11.29 + 8 = 237.04 -> 238.
    assert masked_capacity(1000, 0.15) == 238
    # 10 tokens: 1.5 + 7 * 1.129 + 8 = 17.4 -> capped at the 10 tokens there are.
    assert masked_capacity(10, 0.15) == 10


def test_masked_positions_gather_every_masked_token() -> None:
    ids = big_batch()[:16]
    _, labels = mask_tokens(ids, vocab_size=VOCAB, probability=0.15, pad_id=PAD, cls_id=CLS, mask_id=MASK,
                            generator=torch.Generator().manual_seed(1))
    capacity = masked_capacity(labels.numel(), 0.15)
    positions, position_labels = masked_positions(labels, capacity)
    flat = labels.reshape(-1)
    masked_flat = set(torch.nonzero(flat != IGNORE_INDEX).flatten().tolist())
    assert positions.shape == position_labels.shape == (capacity,)
    assert set(positions[position_labels != IGNORE_INDEX].tolist()) == masked_flat
    assert (position_labels == IGNORE_INDEX).sum() == capacity - len(masked_flat), "padding not labelled IGNORE"
    assert torch.equal(position_labels, flat[positions])
    assert positions.unique().numel() == capacity and positions.max() < flat.numel()


def test_masked_positions_over_capacity_keeps_masked_only() -> None:
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, [1, 4]] = torch.tensor([7, 8])
    labels[1, [0, 2, 5]] = torch.tensor([9, 10, 11])
    positions, position_labels = masked_positions(labels, 3)
    assert positions.tolist() == [1, 4, 6] and position_labels.tolist() == [7, 8, 9]
