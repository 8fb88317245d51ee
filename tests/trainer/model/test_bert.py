"""Our SDPA BERT against transformers' BertForMaskedLM (names and post-norm layout), and the fusion
layers against an explicit per-head attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import BertForMaskedLM

from tests.trainer.model.tcl_testing import hf_bert_config, random_batch, tiny_model_config
from trainer.config import TextConfig
from trainer.model.bert import Attention, BertLayer, TextFusionModel


@pytest.fixture
def text_cfg() -> TextConfig:
    return tiny_model_config().text


def perturbed_hf_bert(cfg: TextConfig, layers: int) -> BertForMaskedLM:
    """A BertForMaskedLM whose LayerNorms and biases are not at their 1 / 0 init, in eval mode."""
    torch.manual_seed(0)
    hf = BertForMaskedLM(hf_bert_config(cfg, layers)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return hf


def test_text_encoder_equals_transformers_bert(text_cfg: TextConfig) -> None:
    """A 4-layer HF BERT's weights load by name (only the cross-attention of our layers 2-3 is left over);
    our text encoder (layers 0-1) gives HF's hidden states after layer 1, and the MLM head HF's logits."""
    hf = perturbed_hf_bert(text_cfg, layers=4)
    ours = TextFusionModel(text_cfg, image_width=64).eval()
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    result = ours.load_state_dict({k: v for k, v in hf.state_dict().items() if k not in tied}, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(".crossattention." in k for k in result.missing_keys)
    assert {k.split(".")[3] for k in result.missing_keys} == {"2", "3"}

    batch = random_batch(tiny_model_config())
    with torch.no_grad():
        want = hf.bert(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True).hidden_states[2]
        got = ours.encode_text(batch.input_ids, batch.attention_mask)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.mlm_logits(want), hf.cls(want), rtol=1e-5, atol=1e-5)


def attention_reference(block: Attention, x: Tensor, context: Tensor, key_mask: Tensor | None) -> Tensor:
    """Per sample and head, softmax(q k^T / sqrt(d)) v with masked keys excluded; then BERT's output
    block: dense, residual, LayerNorm."""
    proj = block.self
    q, k, v = proj.query(x), proj.key(context), proj.value(context)
    d = q.shape[-1] // proj.num_heads
    out = torch.zeros_like(q)
    for b in range(x.shape[0]):
        for h in range(proj.num_heads):
            cols = slice(h * d, (h + 1) * d)
            scores = q[b, :, cols] @ k[b, :, cols].t() / math.sqrt(d)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[b][None, :], float("-inf"))
            out[b, :, cols] = scores.softmax(dim=-1) @ v[b, :, cols]
    return block.output.LayerNorm(block.output.dense(out) + x)


def layer_reference(layer: BertLayer, x: Tensor, key_mask: Tensor, image: Tensor) -> Tensor:
    x = attention_reference(layer.attention, x, x, key_mask)
    assert layer.crossattention is not None
    x = attention_reference(layer.crossattention, x, image, None)
    return layer.output.LayerNorm(layer.output.dense(F.gelu(layer.intermediate.dense(x))) + x)


def test_fusion_cross_attends_to_the_paired_image(text_cfg: TextConfig) -> None:
    """Fusion layers: self-attention over the valid tokens, cross-attention to every token of the image
    paired with the row (image_index), FFN; image width 48 differs from the text width 64."""
    torch.manual_seed(0)
    model = TextFusionModel(text_cfg, image_width=48).eval()
    batch = random_batch(tiny_model_config())
    images = torch.randn(3, 17, 48)
    pairing = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        text = model.encode_text(batch.input_ids, batch.attention_mask)
        got = model.fuse(text, batch.attention_mask, model.image_kv(images), pairing)
        want = text
        for layer in model.fusion_layers:
            want = layer_reference(layer, want, batch.attention_mask.bool(), images[pairing])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert len(model.text_layers) == 2 and all(layer.crossattention is None for layer in model.text_layers)
    assert len(model.fusion_layers) == 2
