"""Learning-rate and distillation-weight schedules, as pure functions of the step."""

from __future__ import annotations

import math

from trainer.config import LossConfig, ModelConfig, OptimConfig


def learning_rate(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Linear warm-up from warmup_lr to lr over warmup_steps, then cosine from lr to min_lr at total_steps.
    (The official code steps its cosine once per epoch; we step it every optimizer step.)"""
    if step < cfg.warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def distill_alpha(step: int, steps_per_epoch: int, cfg: LossConfig) -> float:
    """alpha ramped linearly from 0 over the first alpha_warmup_epochs epochs."""
    if cfg.alpha_warmup_epochs == 0:
        return cfg.alpha
    return cfg.alpha * min(1.0, step / (cfg.alpha_warmup_epochs * steps_per_epoch))


def momentum_coefficient(step: int, cfg: ModelConfig) -> float:
    """The EMA coefficient m at a step: cosine from momentum_start up to momentum over the first
    momentum_warmup_steps steps, then momentum (the paper's constant m when there is no warm-up)."""
    if step >= cfg.momentum_warmup_steps:
        return cfg.momentum
    progress = step / cfg.momentum_warmup_steps
    return cfg.momentum - (cfg.momentum - cfg.momentum_start) * 0.5 * (1 + math.cos(math.pi * progress))
