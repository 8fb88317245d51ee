"""model.text.pool and model.vision.pool: which hidden states become the contrastive features.

The defaults (cls / token) are the paper's and are what every other model test runs; here the mean
pools are checked against loops over the tokens, and the rest of the model is checked not to move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.trainer.model.tcl_testing import BATCH, build_tiny, random_batch, tiny_model_config
from trainer.config import ModelConfig
from trainer.model.tcl import pool_image, pool_text


def pooled_config(text: str = "cls", vision: str = "token") -> ModelConfig:
    cfg = tiny_model_config()
    return cfg.model_copy(update={
        "text": cfg.text.model_copy(update={"pool": text}), "vision": cfg.vision.model_copy(update={"pool": vision}),
    })


def test_text_mean_is_the_mean_over_valid_tokens_only() -> None:
    """Row by row: the sum of the hidden states where the mask is 1, over their count; whatever the padded
    positions hold does not matter."""
    batch = random_batch(tiny_model_config())
    mask = batch.attention_mask
    assert (mask.sum(1) < mask.shape[1]).any(), "the batch must have padded rows"
    hidden = torch.randn(BATCH, mask.shape[1], 8, generator=torch.Generator().manual_seed(1))
    want = torch.stack([
        sum(hidden[r, t] for t in range(mask.shape[1]) if mask[r, t]) / int(mask[r].sum()) for r in range(BATCH)
    ])
    torch.testing.assert_close(pool_text(hidden, mask, "mean"), want)
    garbage = hidden.masked_fill(mask[:, :, None] == 0, 1e6)
    torch.testing.assert_close(pool_text(garbage, mask, "mean"), want)
    assert torch.equal(pool_text(hidden, mask, "cls"), hidden[:, 0])


def test_image_avg_is_the_mean_of_the_patch_tokens() -> None:
    """CLS (token 0) left out: the mean of tokens 1..N; 'token' is token 0."""
    tokens = torch.randn(3, 1 + 16, 8, generator=torch.Generator().manual_seed(2))
    want = torch.stack([sum(tokens[b, 1 + n] for n in range(16)) / 16 for b in range(3)])
    torch.testing.assert_close(pool_image(tokens, "avg"), want)
    assert torch.equal(pool_image(tokens, "token"), tokens[:, 0])


def test_features_are_the_unit_projections_of_the_pooled_states() -> None:
    """encode_text / encode_image project the pooled state and L2-normalise it; the hidden states and
    tokens they return are the encoders' own, the same under every pool."""
    model, _, _ = build_tiny(pooled_config("mean", "avg"))
    paper, _, _ = build_tiny(pooled_config())
    batch = random_batch(model.cfg)
    mask = batch.attention_mask
    hidden, txt = model.encode_text(batch.input_ids, mask)
    tokens, img = model.encode_image(batch.view1)
    lengths = mask.sum(1)
    text_mean = torch.stack([hidden[r, : int(lengths[r])].mean(0) for r in range(BATCH)])  # valid tokens lead
    torch.testing.assert_close(txt, F.normalize(model.text_proj(text_mean), dim=-1))
    torch.testing.assert_close(img, F.normalize(model.vision_proj(tokens[:, 1:].mean(1)), dim=-1))

    paper_hidden, paper_txt = paper.encode_text(batch.input_ids, mask)
    paper_tokens, paper_img = paper.encode_image(batch.view1)
    assert torch.equal(hidden, paper_hidden) and torch.equal(tokens, paper_tokens)
    torch.testing.assert_close(paper_txt, F.normalize(paper.text_proj(paper_hidden[:, 0]), dim=-1))
    assert not torch.allclose(txt, paper_txt) and not torch.allclose(img, paper_img)


def test_pools_change_no_parameter() -> None:
    """Same names, shapes and (same seed) values under every pool: checkpoints and pretrained key tables
    do not depend on it."""
    paper, _, _ = build_tiny(pooled_config())
    mean, _, _ = build_tiny(pooled_config("mean", "avg"))
    paper_state, mean_state = paper.state_dict(), mean.state_dict()
    assert paper_state.keys() == mean_state.keys()
    assert all(torch.equal(paper_state[k], mean_state[k]) for k in paper_state)


def test_momentum_encoder_pools_as_the_online_model_and_keeps_token_locals() -> None:
    """The teacher's global features use the online model's pools (equal to the online features while the
    weights are equal, dropout 0); its LMI locals stay the patch grid and the tokens after [CLS]."""
    model, teacher, _ = build_tiny(pooled_config("mean", "avg"))
    _, paper_teacher, _ = build_tiny(pooled_config())
    batch = random_batch(model.cfg)
    out = teacher(batch.view1, batch.input_ids, batch.attention_mask, image_locals=True, text_locals=True)
    _, txt = model.encode_text(batch.input_ids, batch.attention_mask)
    _, img = model.encode_image(batch.view1)
    torch.testing.assert_close(out.text_feat, txt)
    torch.testing.assert_close(out.image_feat, img)

    paper_out = paper_teacher(batch.view1, batch.input_ids, batch.attention_mask, image_locals=True, text_locals=True)
    assert torch.equal(out.image_locals, paper_out.image_locals)
    assert torch.equal(out.text_locals, paper_out.text_locals)
    assert torch.equal(out.text_local_mask, paper_out.text_local_mask)
