"""DeepSpeed config generation, the schedules and the weight-decay rule, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import load
from trainer.engine import build_ds_config, build_optimizer, decays, distill_alpha, learning_rate
from trainer.model import TCL


def test_ds_config_follows_the_run_config() -> None:
    cfg = load("tiny", ["data.batch_size=6", "optim.grad_clip=1.5", "engine.precision=bf16", "engine.reduce_bucket_size=1000"])
    ds = build_ds_config(cfg)
    assert ds["train_micro_batch_size_per_gpu"] == 6
    assert ds["gradient_clipping"] == 1.5
    assert ds["bf16"] == {"enabled": True}
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_optimization"]["reduce_bucket_size"] == 1000
    assert "optimizer" not in ds and "scheduler" not in ds  # passed as objects, never restated
    assert build_ds_config(load("tiny", ["engine.precision=fp32"]))["bf16"] == {"enabled": False}


def test_learning_rate_warmup_then_cosine() -> None:
    opt = load("tiny", ["optim.lr=1e-4", "optim.warmup_lr=1e-5", "optim.warmup_steps=10", "optim.min_lr=1e-6"]).optim
    assert learning_rate(0, 110, opt) == pytest.approx(1e-5)
    assert learning_rate(5, 110, opt) == pytest.approx(1e-5 + 0.5 * 9e-5)
    assert learning_rate(10, 110, opt) == pytest.approx(1e-4)
    assert learning_rate(60, 110, opt) == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6))  # cosine midpoint
    assert learning_rate(110, 110, opt) == pytest.approx(1e-6)
    assert learning_rate(500, 110, opt) == pytest.approx(1e-6)  # past the end: the floor
    lrs = [learning_rate(s, 110, opt) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_alpha_ramps_over_the_first_epoch() -> None:
    loss = load("tiny").loss
    assert distill_alpha(0, 100, loss) == 0
    assert distill_alpha(25, 100, loss) == pytest.approx(0.1)
    assert distill_alpha(100, 100, loss) == pytest.approx(0.4)
    assert distill_alpha(1000, 100, loss) == pytest.approx(0.4)
    flat = load("tiny", ["loss.alpha_warmup_epochs=0"]).loss
    assert distill_alpha(0, 100, flat) == pytest.approx(0.4)


@pytest.mark.parametrize("special", [True, False])
def test_weight_decay_rule(special: bool) -> None:
    cfg = load("tiny", [f"optim.decay_special_params={special}"])
    model = TCL(cfg.model, cfg.loss)
    named = dict(model.named_parameters())
    assert decays("visual_encoder.blocks.0.attn.qkv.weight", named["visual_encoder.blocks.0.attn.qkv.weight"], cfg.optim)
    assert not decays("visual_encoder.blocks.0.attn.qkv.bias", named["visual_encoder.blocks.0.attn.qkv.bias"], cfg.optim)
    assert not decays("text.bert.embeddings.LayerNorm.weight", named["text.bert.embeddings.LayerNorm.weight"], cfg.optim)
    for name in ("temp", "visual_encoder.pos_embed", "visual_encoder.cls_token"):
        assert decays(name, named[name], cfg.optim) is special
    opt = build_optimizer(model, cfg.optim, fused=False)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == cfg.optim.weight_decay and opt.param_groups[1]["weight_decay"] == 0
    assert (id(named["temp"]) in decayed) is special
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])


def test_scheduler_drives_the_optimizer() -> None:
    cfg = load("tiny", ["optim.lr=1e-3", "optim.warmup_lr=1e-4", "optim.warmup_steps=4", "optim.min_lr=0"])
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=cfg.optim.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: learning_rate(s, 8, cfg.optim) / cfg.optim.lr)
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:4] == pytest.approx([1e-4, 3.25e-4, 5.5e-4, 7.75e-4])
    assert seen[4] == pytest.approx(1e-3)
    assert seen[6] == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 2 / 4)))
