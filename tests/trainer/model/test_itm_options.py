"""model.text.fusion_pool and loss.itm_negative_temp: what the ITM head reads, and how hard its negatives are.

The defaults (cls, None) are the paper's and are what every other model test runs. Here the mean pool
is checked against a loop over the valid tokens (in training and in the evaluator's re-ranking), and the
negative-sampling temperature against the similarities the sampler receives.
"""

from __future__ import annotations

import pytest
import torch

from tests.trainer.model.tcl_testing import BATCH, build_tiny, forward_step, random_batch, tiny_model_config
from trainer.config import LossConfig, ModelConfig
from trainer.eval.retrieval import _itm_scores
from trainer.model import tcl
from trainer.model.bert import ImageKV


def fusion_pooled(pool: str) -> ModelConfig:
    cfg = tiny_model_config()
    return cfg.model_copy(update={"text": cfg.text.model_copy(update={"fusion_pool": pool})})


def encoded(model: tcl.TCL) -> tuple[torch.Tensor, torch.Tensor, ImageKV]:
    """(text hidden states, attention mask, image keys/values) of a random batch: what fusion reads."""
    batch = random_batch(model.cfg)
    hidden, _ = model.encode_text(batch.input_ids, batch.attention_mask)
    tokens, _ = model.encode_image(batch.view1)
    return hidden, batch.attention_mask, model.text.image_kv(tokens)


def test_mean_fusion_pool_reads_the_mean_of_the_valid_fused_tokens() -> None:
    model, _, _ = build_tiny(fusion_pooled("mean"))
    hidden, mask, kv = encoded(model)
    fused = model.text.fuse(hidden, mask, kv)
    lengths = mask.sum(1)
    assert lengths.min() < lengths.max(), "the batch must mix lengths for padding to matter"
    want = torch.stack([model.itm_head(fused[r, : int(lengths[r])].mean(0)) for r in range(BATCH)])
    torch.testing.assert_close(model.itm_logits(fused, mask), want)
    garbage = fused.masked_fill(mask[:, :, None] == 0, 1e4)  # what padding holds must not matter
    torch.testing.assert_close(model.itm_logits(garbage, mask), want)


def test_cls_fusion_pool_is_the_paper_head() -> None:
    model, _, _ = build_tiny(fusion_pooled("cls"))
    hidden, mask, kv = encoded(model)
    fused = model.text.fuse(hidden, mask, kv)
    assert torch.equal(model.itm_logits(fused, mask), model.itm_head(fused[:, 0]))
    mean = build_tiny(fusion_pooled("mean"))[0]
    assert model.state_dict().keys() == mean.state_dict().keys()  # same checkpoints under either pool


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_evaluator_scores_pairs_with_the_configured_pool(pool: str) -> None:
    """The re-ranking in retrieval scores a pair with the same head as training: the match logit."""
    model, _, _ = build_tiny(fusion_pooled(pool))
    hidden, mask, kv = encoded(model)
    index = torch.tensor([1, 0, 3, 2])
    want = model.itm_logits(model.text.fuse(hidden, mask, kv, index), mask)[:, 1]
    torch.testing.assert_close(_itm_scores(model, hidden, mask, kv, index), want)


@pytest.mark.parametrize("negative_temp", [None, 0.5])
def test_negatives_are_drawn_at_the_configured_temperature(negative_temp: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler gets the in-batch online-vs-momentum similarities over itm_negative_temp, or over the
    clamped learned temperature when it is None."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = tcl.sample_hard_negatives

    def spy(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((sim_i2t.clone(), sim_t2i.clone()))
        return real(sim_i2t, sim_t2i)

    monkeypatch.setattr(tcl, "sample_hard_negatives", spy)
    model, teacher, queues = build_tiny(tiny_model_config(), LossConfig(itm_negative_temp=negative_temp))
    with torch.no_grad():
        model.temp.fill_(0.03)
    batch = random_batch(model.cfg)
    _, teacher_out, _ = forward_step(model, teacher, queues, batch)
    (sim_i2t, sim_t2i), = seen
    with torch.no_grad():
        _, img = model.encode_image(batch.view1)
        _, txt = model.encode_text(batch.input_ids, batch.attention_mask)
    divisor = 0.03 if negative_temp is None else negative_temp
    torch.testing.assert_close(sim_i2t, img @ teacher_out.text_feat.t() / divisor)
    torch.testing.assert_close(sim_t2i, txt @ teacher_out.image_feat.t() / divisor)


def test_negative_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="itm_negative_temp"):
        LossConfig(itm_negative_temp=0.0)
