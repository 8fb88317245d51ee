"""Tiny TCL configs, random batches and one-step forward for the model and objective tests.

Tiny per issue 2: ViT patch 16 at 64 px (4x4 grid), width 64, depth 2; BERT width 64, 2 text + 2 fusion
layers; embed 32; queue 64; batch 4. Token ids are random (no tokenizer): PAD=0, CLS=101, SEP=102, MASK=103.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import BertConfig

from trainer.config import LossConfig, ModelConfig, TextConfig, VisionConfig
from trainer.model import (
    TCL,
    FeatureQueue,
    MomentumEncoder,
    TeacherOutput,
    mask_tokens,
    masked_capacity,
    masked_positions,
)

PAD, CLS, SEP, MASK = 0, 101, 102, 103
VOCAB = 30522
BATCH = 4
SEQ_LEN = 12
MLM_PROBABILITY = 0.15

TinyModels = tuple[TCL, MomentumEncoder, FeatureQueue]
"""The online model, its momentum copy and the queues (the `tiny` fixture)."""


def tiny_model_config(*, dropout: float = 0.0, img_size: int = 64, **updates: object) -> ModelConfig:
    """The tiny model; dropout 0 by default so that a forward can be recomputed exactly."""
    vision = VisionConfig(img_size=img_size, patch_size=16, width=64, depth=2, num_heads=4, mlp_ratio=2.0)
    text = TextConfig(
        vocab_size=VOCAB, hidden_size=64, text_layers=2, fusion_layers=2, num_heads=4, intermediate_size=128,
        max_position_embeddings=64, dropout=dropout,
    )
    return ModelConfig(vision=vision, text=text, embed_dim=32, queue_size=64, **updates)


def hf_bert_config(cfg: TextConfig, layers: int, **updates: object) -> BertConfig:
    """A transformers BertConfig of the same sizes as our text config, with `layers` layers."""
    sizes: dict[str, object] = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, hidden_act="gelu",
    )
    return BertConfig(**{**sizes, **updates})


def build_tiny(cfg: ModelConfig, loss: LossConfig | None = None, seed: int = 0) -> TinyModels:
    """A seeded online model with its momentum copy and queues."""
    torch.manual_seed(seed)
    model = TCL(cfg, loss or LossConfig())
    return model, MomentumEncoder(model), FeatureQueue(cfg.queue_size, cfg.embed_dim, seed=seed)


@dataclass
class Batch:
    view1: Tensor
    view2: Tensor
    input_ids: Tensor
    attention_mask: Tensor


def random_batch(cfg: ModelConfig, batch: int = BATCH, length: int = SEQ_LEN, seed: int = 0) -> Batch:
    """Two image views and captions of different lengths: [CLS] words [SEP] [PAD]...; row 0 is full."""
    g = torch.Generator().manual_seed(seed)
    size = cfg.vision.img_size
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    lengths[0] = length
    ids = torch.randint(MASK + 1, cfg.text.vocab_size, (batch, length), generator=g)
    positions = torch.arange(length)[None, :]
    ids[:, 0] = CLS
    ids = torch.where(positions == (lengths[:, None] - 1), torch.full_like(ids, SEP), ids)
    attention_mask = (positions < lengths[:, None]).long()
    ids = ids.masked_fill(attention_mask == 0, PAD)
    return Batch(
        view1=torch.randn(batch, 3, size, size, generator=g),
        view2=torch.randn(batch, 3, size, size, generator=g),
        input_ids=ids,
        attention_mask=attention_mask,
    )


def mlm_inputs(batch: Batch, vocab_size: int, seed: int = 0) -> dict[str, Tensor]:
    """Masked ids, the gathered masked positions and their labels, as the train step makes them."""
    g = torch.Generator().manual_seed(seed)
    masked, labels = mask_tokens(
        batch.input_ids, vocab_size=vocab_size, probability=MLM_PROBABILITY, pad_id=PAD, cls_id=CLS, mask_id=MASK,
        generator=g,
    )
    positions, position_labels = masked_positions(labels, masked_capacity(labels.numel(), MLM_PROBABILITY))
    return {"mlm_input_ids": masked, "mlm_positions": positions, "mlm_labels": position_labels}


def teacher_forward(model: TCL, teacher: MomentumEncoder, batch: Batch, mlm: dict[str, Tensor]) -> TeacherOutput:
    """The momentum pass the online forward needs under model.loss_cfg."""
    w = model.loss_cfg
    return teacher(
        batch.view2, batch.input_ids, batch.attention_mask,
        image_locals=bool(w.lmi_image), text_locals=bool(w.lmi_text),
        mlm_input_ids=mlm.get("mlm_input_ids"), mlm_positions=mlm.get("mlm_positions"),
    )


def forward_step(
    model: TCL, teacher: MomentumEncoder, queues: FeatureQueue, batch: Batch, alpha: float = 0.4, seed: int = 0,
) -> tuple[dict[str, Tensor], TeacherOutput, dict[str, Tensor]]:
    """One online forward (no backward) with the teacher's outputs, like trainer.step without the engine."""
    mlm = mlm_inputs(batch, model.cfg.text.vocab_size, seed) if model.loss_cfg.mlm else {}
    teacher_out = teacher_forward(model, teacher, batch, mlm)
    out = model(
        batch.view1, batch.input_ids, batch.attention_mask, teacher_out, queues.image_queue, queues.text_queue,
        alpha, **mlm,
    )
    return out, teacher_out, mlm
