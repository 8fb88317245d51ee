"""AdamW over the trainable parameters, with weight decay decided by name and shape."""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import OptimConfig

SPECIAL_DECAYED = ("temp", "visual_encoder.pos_embed", "visual_encoder.cls_token")
"""1-D or token parameters that the official code decays (our temperature is a one-element 1-D tensor)."""


def decays(name: str, param: nn.Parameter, cfg: OptimConfig) -> bool:
    """Biases and other 1-D parameters (LayerNorm) are exempt; temp, pos_embed and cls_token decay when
    cfg.decay_special_params (the official default), else they are exempt too."""
    if name in SPECIAL_DECAYED:
        return cfg.decay_special_params
    return param.ndim > 1


def build_optimizer(model: nn.Module, cfg: OptimConfig, *, fused: bool) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if decays(name, param, cfg) else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)
