"""A real one-process DeepSpeed run for the checkpoint tests: a ZeRO-2 engine over one linear layer,
trained on fixed data, saving through the Checkpointer at the steps asked for (with the control plane's
registry, as the trainer, when TCL_API_URL / TCL_RUN_ID / TCL_RUN_TOKEN are set).

    python -m tests.trainer.checkpoint.worker OUTPUT_DIR --save 1,2 [--resume auto|PATH] [key=value ...]

Writes ANSWERS/rank{r}.json: {"resumed": tag or null, "saved": [uri, ...], "steps": [steps trained],
"weights": sha256 of the weights after the last step} or {"error": message} (exit status 3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--answers", type=Path, required=True)
    parser.add_argument("--save", default="", help="comma-separated steps to checkpoint at")
    parser.add_argument("--steps", type=int, default=0, help="train up to this step")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29600 + os.getpid() % 1000))
    os.environ.update(RANK=os.environ.get("RANK", "0"), WORLD_SIZE=os.environ.get("WORLD_SIZE", "1"),
                      LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"))

    import deepspeed

    from trainer.checkpoint import Checkpointer
    from trainer.config import load, resolve_batch
    from trainer.control_plane import ControlPlane
    from trainer.distributed import init_distributed
    from trainer.engine import build_ds_config

    base = [f"output_dir={args.output_dir}", "data.batch_size=4", "engine.precision=fp32"]
    cfg = load("tiny", base + args.overrides)
    dist = init_distributed()
    try:
        checkpointer = Checkpointer(cfg, dist, registry=ControlPlane.from_env() if dist.is_main else None)
        plan = checkpointer.plan_resume(args.resume) if args.resume else None
        if plan is not None:
            cfg = plan.adapt(cfg)
        torch.manual_seed(0)
        model = torch.nn.Linear(args.width, args.width)
        ds = build_ds_config(cfg, resolve_batch(cfg, dist.world_size))  # the trainer's, checkpoint keys included
        engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                                          config=ds)
        step = 0
        if plan is not None:
            state = checkpointer.load(engine, plan)
            step = state["step"]
        saves = {int(s) for s in args.save.split(",") if s}
        saved = []
        done = []
        while step < args.steps:
            step += 1
            g = torch.Generator().manual_seed(step * 100 + dist.rank)
            x = torch.randn(4, args.width, generator=g)
            loss = engine(x).pow(2).mean()
            engine.backward(loss)
            engine.step()
            done.append(step)
            if step in saves:
                saved.append(checkpointer.save(engine, step, {"step": step}).uri)
    except ValueError as err:  # CheckpointError, or a storage layout refused at start-up
        (args.answers / f"rank{dist.rank}.json").write_text(json.dumps({"error": str(err)}))
        return 3
    weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in engine.module.parameters())).hexdigest()
    answer = {"resumed": plan.tag if plan else None, "saved": saved, "steps": done, "weights": weights}
    (args.answers / f"rank{dist.rank}.json").write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
