"""A stand-in for trainer/main.py in the API's tests: it speaks the control-plane protocol through
trainer.control_plane exactly as the real trainer does, but trains nothing (no torch, starts fast).

What it does comes from `<data.train>/behaviour.json` (every key optional):
  step_seconds (0.05)      sleep per step
  fail_at_step (none)      exit with exit_code at this step
  exit_code (1)
  stall_at_step (none)     after this step's reports, sleep until signalled
  ignore_sigterm (false)   go on after SIGTERM (only SIGKILL stops it)
  hold_until (none)        a file: step hold_at_step (default: the last) waits for it to exist
  fail_attempts (none)     the first n attempts fail at once (attempts are counted with files
                           in output_dir)
  probe (none)             {"read": [paths], "write": [paths]}: at start, try each and write
                           `<output_dir>/probe.json`: path -> "ok" or the error's name
Steps: optim.max_steps; heartbeats every log.every_steps; a checkpoint directory every
checkpoint.every_steps and at the end. Each rank writes `<output_dir>/pids/<pid>` at start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from trainer.config import load
from trainer.control_plane import ControlPlane


def write_checkpoint(root: Path, step: int) -> Path:
    path = root / "checkpoints" / f"step_{step:06d}"
    (path / "global_step").mkdir(parents=True, exist_ok=True)
    (path / "global_step" / "mp_rank_00_model_states.pt").write_bytes(os.urandom(2048) + bytes([step % 256]))
    (path / "client_state.json").write_text(json.dumps({"step": step}))
    return path


def probe(spec: dict[str, list[str]], out: Path) -> None:
    """What this process may read and write (the isolation tests' attacker)."""
    results: dict[str, str] = {}
    for key, mode, paths in (("r", "rb", spec.get("read", [])), ("w", "ab", spec.get("write", []))):
        for path in paths:
            try:
                with open(path, mode):  # opening is the access check
                    pass
                results[f"{key}:{path}"] = "ok"
            except OSError as err:
                results[f"{key}:{path}"] = type(err).__name__
    (out / "probe.json").write_text(json.dumps(results))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--local_rank", type=int, default=0)
    parser.add_argument("--resume")
    args = parser.parse_args()
    cfg = load(args.config)
    behaviour = {"step_seconds": 0.05, "exit_code": 1}
    spec = Path(cfg.data.train) / "behaviour.json"
    if spec.is_file():
        behaviour.update(json.loads(spec.read_text()))
    out = Path(cfg.output_dir)
    (out / "pids").mkdir(parents=True, exist_ok=True)
    (out / "pids" / str(os.getpid())).write_text(str(os.getpgid(0)))
    if "probe" in behaviour:
        probe(behaviour["probe"], out)
    if "fail_attempts" in behaviour:
        attempts = len(list(out.glob("attempt-*"))) + 1
        (out / f"attempt-{attempts}").touch()
        if attempts <= behaviour["fail_attempts"]:
            print(f"attempt {attempts} fails on purpose", flush=True)
            return int(behaviour["exit_code"])

    def on_sigterm(*_: object) -> None:
        if behaviour.get("ignore_sigterm"):
            print("SIGTERM: ignored", flush=True)
            return
        print("SIGTERM: stopping", flush=True)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    control = ControlPlane.from_env() if int(os.environ.get("RANK", "0")) == 0 else None
    total = cfg.optim.max_steps or 10
    for step in range(1, total + 1):
        time.sleep(behaviour["step_seconds"])
        hold = behaviour.get("hold_until")
        while hold and step == behaviour.get("hold_at_step", total) and not Path(hold).exists():
            time.sleep(0.05)
        if step == behaviour.get("fail_at_step"):
            print(f"step {step}: failing on purpose", flush=True)
            return int(behaviour["exit_code"])
        print(f"step {step}/{total}", flush=True)
        metrics = {"loss": 10.0 / step, "itm": 1.0 / step}
        if control and step % cfg.log.every_steps == 0:
            control.heartbeat(step, total, step / total, 100.0 + step, metrics | {"eval/r_mean": float(step)})
        if control and (step % cfg.checkpoint.every_steps == 0 or step == total):
            control.register_checkpoint(write_checkpoint(out, step), step, metrics)
        if step == behaviour.get("stall_at_step"):
            time.sleep(3600)
    print("training done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
