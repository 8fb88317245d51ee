"""One process of test_engine's DeepSpeed check (run as a script: deepspeed.initialize sets process-wide
state that must not leak into the test session). Builds the engine through trainer.engine.build_engine
with a user's engine.deepspeed override, runs one optimizer step of 2 accumulated micro-batches the way
trainer.step does, and writes what the engine reports, and how far its update is from a plain torch
AdamW step on the mean gradient, to OUT/engine.json."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from trainer.config import load, resolve_batch
from trainer.engine import build_engine, build_optimizer

OVERRIDES = [
    "data.batch_size=3", "data.global_batch_size=6", "engine.precision=fp32", "optim.lr=1e-2",
    "optim.warmup_steps=0", "optim.weight_decay=0.1",
]


def max_difference(a: nn.Module, b: nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


def main(out: Path) -> None:
    cfg = load("tiny", [
        *OVERRIDES, "engine.deepspeed={zero_optimization: {reduce_scatter: false},"
        f" csv_monitor: {{enabled: true, output_path: '{out}', job_name: override}}}}",
    ])
    plan = resolve_batch(cfg, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    start, reference = copy.deepcopy(model), copy.deepcopy(model)
    engine = build_engine(model, cfg, plan=plan, total_steps=10, device=torch.device("cpu"))
    x, y = torch.randn(plan.loader_batch, 5), torch.randn(plan.loader_batch, 1)
    for j in range(plan.accum):
        engine.set_gradient_accumulation_boundary(j == plan.accum - 1)
        engine.backward(nn.functional.mse_loss(engine(x[j :: plan.accum]), y[j :: plan.accum]))
    engine.step()

    optimizer = build_optimizer(reference, cfg.optim, fused=False)
    loss = sum(nn.functional.mse_loss(reference(x[j :: plan.accum]), y[j :: plan.accum]) for j in range(plan.accum))
    (loss / plan.accum).backward()
    optimizer.step()
    (out / "engine.json").write_text(json.dumps({
        "micro": engine.train_micro_batch_size_per_gpu(), "accum": engine.gradient_accumulation_steps(),
        "train_batch": engine.train_batch_size(), "reduce_scatter": engine.zero_reduce_scatter(),
        "zero_optimizer_reduce_scatter": engine.optimizer.reduce_scatter, "global_steps": engine.global_steps,
        "moved": max_difference(model, start), "from_reference": max_difference(model, reference),
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
