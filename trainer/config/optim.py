"""AdamW with linear warm-up then cosine decay, clipping and weight-decay exemptions."""

from __future__ import annotations

from pydantic import Field, model_validator

from trainer.config.base import Section


class OptimConfig(Section):
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate, reached at the end of warm-up."""
    warmup_lr: float = Field(1e-5, ge=0)
    warmup_steps: int = Field(2000, ge=0)
    min_lr: float = Field(1e-5, ge=0)
    """Cosine floor at the end of training."""
    weight_decay: float = Field(0.02, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(0.0, ge=0)
    """Global gradient-norm clip; 0 disables it."""
    epochs: int = Field(30, ge=1)
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides epochs for the schedule length)."""
    decay_special_params: bool = True
    """Apply weight decay to temp, pos_embed and cls_token as the official code does;
    biases and other 1-D parameters are always exempt."""

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        return self
