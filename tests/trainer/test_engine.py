"""DeepSpeed config generation (with a user's engine.deepspeed), the schedules and the weight-decay rule,
against hand-computed values; one real deepspeed.initialize with an override and 2 accumulated micro-batches."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer import engine_worker
from trainer.config import BatchPlan, ConfigError, load, resolve_batch
from trainer.config.engine import GENERATED_DEEPSPEED_KEYS
from trainer.engine import build_ds_config, build_optimizer, decays, distill_alpha, learning_rate
from trainer.model import TCL


def test_ds_config_follows_the_run_config() -> None:
    cfg = load(
        "tiny", ["data.batch_size=6", "optim.grad_clip=1.5", "engine.precision=bf16", "engine.reduce_bucket_size=1000"]
    )
    ds = build_ds_config(cfg, BatchPlan(micro=6, world=2, accum=3, global_batch=36))
    assert ds["train_micro_batch_size_per_gpu"] == 6
    assert (ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (3, 36)
    assert ds["gradient_clipping"] == 1.5
    assert ds["bf16"] == {"enabled": True}
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_optimization"]["reduce_bucket_size"] == 1000
    assert "optimizer" not in ds and "scheduler" not in ds  # passed as objects, never restated
    fp32 = load("tiny", ["engine.precision=fp32"])
    assert build_ds_config(fp32, resolve_batch(fp32, 1))["bf16"] == {"enabled": False}


def test_user_deepspeed_settings_merge_over_the_generated_config() -> None:
    cfg = load("tiny", [
        "engine.deepspeed={zero_optimization: {offload_optimizer: {device: cpu, pin_memory: true},"
        " round_robin_gradients: true}, comms_logger: {enabled: true}, steps_per_print: 100}",
    ])
    ds = build_ds_config(cfg, resolve_batch(cfg, 1))
    generated = build_ds_config(load("tiny"), resolve_batch(cfg, 1))
    zero = ds["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True} and zero["round_robin_gradients"] is True
    assert {k: zero[k] for k in generated["zero_optimization"]} == generated["zero_optimization"]  # the rest kept
    assert ds["comms_logger"] == {"enabled": True} and ds["steps_per_print"] == 100
    assert {k: v for k, v in ds.items() if k not in ("zero_optimization", "comms_logger", "steps_per_print")} == {
        k: v for k, v in generated.items() if k not in ("zero_optimization", "steps_per_print")
    }


def _nested(dotted: str, value: object) -> dict:
    *parents, leaf = dotted.split(".")
    tree: dict = {leaf: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


@pytest.mark.parametrize("key", sorted(GENERATED_DEEPSPEED_KEYS))
def test_each_generated_key_is_refused_naming_the_run_config_key(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load("tiny", [f"engine.deepspeed={json.dumps(_nested(key, {'enabled': True}))}"])
    owner = GENERATED_DEEPSPEED_KEYS[key]
    assert f"engine.deepspeed: Value error, {key} is generated from the RunConfig: set {owner} instead" in str(
        err.value
    )


@pytest.mark.parametrize(("override", "names"), [
    ({"train_batch_size": 512, "gradient_accumulation_steps": 8}, ["data.global_batch_size"]),
    ({"bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}, ["engine.precision", "engine.zero_stage"]),
    ({"zero_optimization": 2}, ["engine.zero_stage"]),  # DeepSpeed's legacy form of the section
    ({"train_micro_batch_size_per_gpu": 32}, ["data.batch_size"]),
    ({"zero_optimization": {"reduce_bucket_size": 1e6}}, ["engine.reduce_bucket_size"]),
])
def test_refusals_name_every_offending_key(override: dict, names: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load("tiny", [f"engine.deepspeed={json.dumps(override)}"])
    for name in names:
        assert f"set {name} instead" in str(err.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_engine_takes_the_override_and_accumulates(tmp_path: Path) -> None:
    """deepspeed.initialize through build_engine (ZeRO-2, fp32, one gloo rank): the override is in effect
    (ZeRO's reduce_scatter off; the CSV monitor writes the learning rate), and 2 accumulated micro-batches
    with one engine.step() are one AdamW update on their mean gradient."""
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, engine_worker.__file__, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    got = json.loads((tmp_path / "engine.json").read_text())
    assert (got["micro"], got["accum"], got["train_batch"]) == (3, 2, 6)
    assert got["reduce_scatter"] is False and got["zero_optimizer_reduce_scatter"] is False  # default: True
    assert got["global_steps"] == 1
    assert got["moved"] > 1e-3 and got["from_reference"] < 1e-6
    rows = list(csv.reader((tmp_path / "override" / "Train_Samples_lr.csv").open()))
    cfg = load("tiny", engine_worker.OVERRIDES)
    assert rows[0] == ["step", "lr"] and len(rows) == 2
    assert (int(rows[1][0]), float(rows[1][1])) == (6, pytest.approx(learning_rate(1, 10, cfg.optim)))


def test_learning_rate_warmup_then_cosine() -> None:
    opt = load("tiny", ["optim.lr=1e-4", "optim.warmup_lr=1e-5", "optim.warmup_steps=10", "optim.min_lr=1e-6"]).optim
    assert learning_rate(0, 110, opt) == pytest.approx(1e-5)
    assert learning_rate(5, 110, opt) == pytest.approx(1e-5 + 0.5 * 9e-5)
    assert learning_rate(10, 110, opt) == pytest.approx(1e-4)
    assert learning_rate(60, 110, opt) == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6))  # cosine midpoint
    assert learning_rate(110, 110, opt) == pytest.approx(1e-6)
    assert learning_rate(500, 110, opt) == pytest.approx(1e-6)  # past the end: the floor
    lrs = [learning_rate(s, 110, opt) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs[:-1], lrs[1:], strict=True))


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
    rule = {"visual_encoder.blocks.0.attn.qkv.weight": True, "visual_encoder.blocks.0.attn.qkv.bias": False,
            "text.bert.embeddings.LayerNorm.weight": False}
    for name, decayed in rule.items():
        assert decays(name, named[name], cfg.optim) is decayed, name
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
