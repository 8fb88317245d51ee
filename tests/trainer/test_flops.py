"""The FLOP count against a hand count of the tiny preset and torch's FLOP counter on the real modules."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trainer.flops import flops_per_sample, fusion_forward, image_keys_values, mfu, text_forward, vit_forward
from trainer.config import load
from trainer.model.bert import TextFusionModel
from trainer.model.vision import build_vision_encoder

# Tiny preset by hand: ViT 64 px / patch 16 (16 patches + CLS = 17 tokens), width 64, MLP 128, depth 2;
# text width 64, FFN 128, 2 text + 2 fusion layers, 25 tokens, vocab 30522; embed 32, queue 64, batch 8.
VIT = 2 * 16 * 768 * 64 + 2 * (2 * 17 * 64 * 192 + 4 * 17 * 17 * 64 + 2 * 17 * 64 * 64 + 2 * 2 * 17 * 64 * 128)
TEXT_LAYER = 2 * 25 * 64 * 192 + 4 * 25 * 25 * 64 + 2 * 25 * 64 * 64 + 2 * 2 * 25 * 64 * 128
TEXT = 2 * TEXT_LAYER
FUSION = 2 * (TEXT_LAYER + 2 * 2 * 25 * 64 * 64 + 4 * 25 * 17 * 64)
IMAGE_KV = 2 * 2 * (2 * 17 * 64 * 64)
MLM_HEAD_PER_POSITION = 2 * 64 * 64 + 2 * 64 * 30522
QUEUE_QUERY = 2 * 32 * (8 + 64)


def test_tiny_model_count_by_hand():
    count = flops_per_sample(load("tiny"))
    assert count.vision == 4 * VIT  # online view (x3) + momentum view (x1)
    assert count.text == (3 + 1 + 3 + 1) * TEXT  # online, momentum, MLM student, MLM teacher
    assert count.fusion == (3 * 4 + 1) * (FUSION + IMAGE_KV)  # ITM pos + 2 neg and MLM student (x3), teacher (x1)
    assert count.heads == (
        4 * (2 * 64 * 32 * 2)  # vision_proj + text_proj on CLS
        + 2 * 16 * 64 * 32 + 2 * 24 * 64 * 32  # momentum projections of the LMI locals
        + 3 * 2 * 3 * 64 * 2  # ITM head on 3 pairs
        + 4 * 25 * MLM_HEAD_PER_POSITION  # MLM head at every position, student (x3) + teacher (x1)
    )
    assert count.contrastive == 2 * 4 * QUEUE_QUERY + 2 * 3 * QUEUE_QUERY + 3 * 2 * 32 * 8 * 16 + 3 * 2 * 32 * 8 * 24


def test_tiny_executed_count_by_hand():
    count = flops_per_sample(load("tiny"), executed=True)
    assert count.fusion == 13 * FUSION + 4 * IMAGE_KV  # image keys/values once for the online view (x3) and the teacher
    assert count.heads == pytest.approx(4 * 2 * 64 * 32 * 2 + 2 * 16 * 64 * 32 + 2 * 24 * 64 * 32 + 3 * 2 * 3 * 64 * 2
                                        + 4 * 0.15 * 25 * MLM_HEAD_PER_POSITION)


def test_terms_of_weight_zero_are_not_counted():
    full = flops_per_sample(load("tiny"))
    no_mlm = flops_per_sample(load("tiny", ["loss.mlm=0"]))
    assert full.text - no_mlm.text == 4 * TEXT
    assert full.fusion - no_mlm.fusion == 4 * (FUSION + IMAGE_KV)
    assert flops_per_sample(load("tiny", ["loss.itm=0", "loss.mlm=0"])).fusion == 0


def test_paper_config_matches_the_issue():
    count = flops_per_sample(load("pretrain_4m"))
    assert count.total == pytest.approx(289e9, rel=0.01)
    shares = count.shares()
    assert 0.63 < shares["vision"] < 0.65
    assert 0.26 < shares["fusion"] < 0.29
    assert flops_per_sample(load("pretrain_4m"), executed=True).total < 0.9 * count.total
    assert mfu(1480, count.total) == pytest.approx(1480 * count.total / 989e12)


def counted(fn) -> int:
    """FLOPs torch's counter sees (math attention, so the attention products are visible matmuls)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_pass_formulas_match_torch_counter_on_the_real_modules():
    cfg = load("tiny")
    vit = build_vision_encoder(cfg.model.vision).eval()
    assert counted(lambda: vit.forward_features(torch.randn(1, 3, 64, 64))) == vit_forward(cfg.model.vision)

    text = TextFusionModel(cfg.model.text, image_width=cfg.model.vision.width).eval()
    ids, mask = torch.randint(1000, 2000, (1, 25)), torch.ones(1, 25, dtype=torch.long)
    assert counted(lambda: text.encode_text(ids, mask)) == text_forward(cfg.model.text, 25)
    image_tokens = torch.randn(1, 17, cfg.model.vision.width)
    assert counted(lambda: text.image_kv(image_tokens)) == image_keys_values(cfg.model.text, 17, cfg.model.vision.width)
    kv = text.image_kv(image_tokens)
    hidden = torch.randn(1, 25, cfg.model.text.hidden_size)
    assert counted(lambda: text.fuse(hidden, mask, kv)) == fusion_forward(cfg.model.text, 25, 17)
