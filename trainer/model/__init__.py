"""The TCL model: build the online model, its momentum encoder and the feature queues from a RunConfig."""

from __future__ import annotations

from torch import nn

from trainer.config import RunConfig
from trainer.model.feature_queue import FeatureQueue, gather_from_ranks
from trainer.model.masking import mask_tokens, masked_capacity, masked_positions
from trainer.model.momentum import MomentumEncoder
from trainer.model.pretrained import LoadReport, WeightLoadError, load_text_weights, load_vision_weights
from trainer.model.tcl import TCL, DualEncoder, TeacherOutput


def build_model(cfg: RunConfig) -> tuple[TCL, MomentumEncoder, FeatureQueue]:
    """Online model (pretrained where configured), its fp32 momentum copy, and queues identical on every
    rank (seeded by cfg.seed). All on CPU in fp32: the engine moves and casts the online model."""
    model = TCL(cfg.model, cfg.loss)
    if cfg.model.vision.init:
        load_vision_weights(model.visual_encoder, cfg.model.vision.init)
    if cfg.model.text.init:
        load_text_weights(model.text, cfg.model.text.init)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    teacher = MomentumEncoder(model)
    if cfg.engine.compile:
        for encoder in (model, teacher):
            encoder.compile_blocks()
    queues = FeatureQueue(cfg.model.queue_size, cfg.model.embed_dim, seed=cfg.seed)
    if cfg.model.init:  # weights-only start from a checkpoint of any layout trainer.weights reads
        from trainer.weights.load import init_from

        init_from(cfg.model.init, model, teacher, queues)
    return model, teacher, queues


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "TCL", "DualEncoder", "FeatureQueue", "LoadReport", "MomentumEncoder", "TeacherOutput", "WeightLoadError",
    "build_model", "count_parameters", "gather_from_ranks", "load_text_weights", "load_vision_weights",
    "mask_tokens", "masked_capacity", "masked_positions",
]
