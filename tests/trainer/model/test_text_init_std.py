"""model.text.init_std: the std of BERT's from-scratch init, and what a larger one changes ([CLS] mixes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.trainer.model.tcl_testing import random_batch, tiny_model_config
from trainer.config import ModelConfig
from trainer.model.bert import TextFusionModel


def text_model(std: float) -> tuple[ModelConfig, TextFusionModel]:
    cfg = tiny_model_config()
    cfg = cfg.model_copy(update={"text": cfg.text.model_copy(update={"init_std": std})})
    torch.manual_seed(0)
    return cfg, TextFusionModel(cfg.text, image_width=cfg.vision.width)


def mean_cls_cosine(cfg: ModelConfig, model: TextFusionModel) -> float:
    """Mean pairwise cosine of the [CLS] hidden states of 16 random captions."""
    batch = random_batch(cfg, batch=16)
    with torch.no_grad():
        cls = F.normalize(model.encode_text(batch.input_ids, batch.attention_mask)[:, 0], dim=-1)
    cosine = cls @ cls.t()
    return float(cosine[~torch.eye(16, dtype=torch.bool)].mean())


def test_weights_and_embeddings_are_drawn_with_init_std_and_biases_are_zero() -> None:
    for std in (0.02, 0.125):
        _, model = text_model(std)
        words = model.bert.embeddings.word_embeddings.weight.detach()
        assert abs(float(words.std()) - std) < 0.01 * std and abs(float(words.mean())) < 0.01 * std
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                assert abs(float(module.weight.detach().std()) - std) < 0.1 * std, name
                assert not module.bias.any(), name


def test_a_fan_in_std_makes_cls_differ_between_captions() -> None:
    """At BERT's 0.02 attention barely mixes the tokens, so [CLS] is nearly the same for every caption;
    at 1/sqrt(hidden) = 0.125 it is not."""
    cfg, bert_init = text_model(0.02)
    _, fan_in = text_model(0.125)
    assert mean_cls_cosine(cfg, bert_init) > 0.999
    assert mean_cls_cosine(cfg, fan_in) < 0.99
