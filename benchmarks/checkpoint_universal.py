"""What an elastic resume costs: DeepSpeed's ZeRO-2 save and load against the universal conversion.

    python -m benchmarks.checkpoint_universal --config tiny [--repeats 3] [key=value ...]

Builds the project's model and engine (one process, world of one), takes one optimizer step on a
synthetic batch, then times, in the same process: a native save (what every checkpoint costs), the
conversion of that checkpoint to the universal format (`trainer.checkpoint.elastic`, what an elastic
resume pays once), and loading each form. "Saving universal from the start" would add the conversion
to every save; the ratios below say what that costs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29650"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")

    from trainer.checkpoint.elastic import convert_to_universal
    from trainer.config import load, resolve_batch
    from trainer.distributed import init_distributed
    from trainer.engine import build_engine
    from trainer.model import build_model, count_parameters

    cfg = load(args.config, ["engine.precision=fp32", *args.overrides])
    dist = init_distributed()
    model, _, _ = build_model(cfg)
    engine = build_engine(model, cfg, plan=resolve_batch(cfg, 1), total_steps=10, device=dist.device)
    # one optimizer step (of zero gradients), so that every Adam moment exists as in a real checkpoint
    loss = sum(p.float().sum() for p in engine.module.parameters() if p.requires_grad) * 0.0
    engine.backward(loss)
    engine.step()

    root = Path(tempfile.mkdtemp(prefix="tcl-universal-bench-"))
    timings: dict[str, list[float]] = {"save": [], "convert": [], "load_native": [], "load_universal": []}
    try:
        for i in range(args.repeats):
            tag = f"step_{i:08d}"
            start = time.perf_counter()
            engine.save_checkpoint(str(root), tag=tag, save_latest=False)
            timings["save"].append(time.perf_counter() - start)
            start = time.perf_counter()
            universal = convert_to_universal(root / tag)
            timings["convert"].append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.load_checkpoint(str(root), tag=tag)
            timings["load_native"].append(time.perf_counter() - start)
            engine._config.load_universal_checkpoint = True  # the engine of an elastic resume has it from the start
            start = time.perf_counter()
            engine.load_checkpoint(str(universal.parent), tag=universal.name)
            timings["load_universal"].append(time.perf_counter() - start)
            engine._config.load_universal_checkpoint = False
        best = {k: min(v) for k, v in timings.items()}
        native_bytes = _size(root / "step_00000000") - _size(root / "step_00000000" / "universal")
        result = {
            "config": args.config, "parameters": count_parameters(engine.module),
            "tensors": sum(1 for _ in engine.module.parameters()), "native_bytes": native_bytes,
            "universal_bytes": _size(root / "step_00000000" / "universal"),
            "seconds": {k: round(v, 3) for k, v in best.items()},
            "convert_over_save": round(best["convert"] / best["save"], 2),
            "save_plus_convert_over_save": round((best["save"] + best["convert"]) / best["save"], 2),
            "load_universal_over_native": round(best["load_universal"] / best["load_native"], 2),
            "convert_bytes_per_second": round(native_bytes / best["convert"]),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
