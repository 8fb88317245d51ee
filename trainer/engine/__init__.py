"""DeepSpeed engine construction: config, optimizer and schedule from the RunConfig."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.config import BatchPlan, RunConfig
from trainer.engine.ds_config import build_ds_config
from trainer.engine.optimizer import build_optimizer, decays
from trainer.engine.schedule import distill_alpha, learning_rate


def build_engine(
    model: nn.Module, cfg: RunConfig, *, plan: BatchPlan, total_steps: int, device: torch.device
) -> Any:
    """deepspeed.initialize with ZeRO, bf16 or fp32, the plan's micro-batch and accumulation, a torch
    AdamW (fused on GPU) and the warm-up + cosine schedule (a LambdaLR that DeepSpeed steps once per
    optimizer step, at the accumulation boundary, and checkpoints)."""
    import deepspeed

    model.to(device)
    optimizer = build_optimizer(model, cfg.optim, fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(step, total_steps, cfg.optim) / cfg.optim.lr
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=build_ds_config(cfg, plan)
    )
    return engine


__all__ = ["build_ds_config", "build_engine", "build_optimizer", "decays", "distill_alpha", "learning_rate"]
