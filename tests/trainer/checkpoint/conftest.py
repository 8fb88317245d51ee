"""Run the checkpoint worker (a real one-process DeepSpeed ZeRO-2 run) and read its JSON answer."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


def run_worker(answers: Path, output_dir: str | Path, *args: str, env: dict[str, str] | None = None, ranks: int = 1,
               expect: int = 0, timeout: float = 240) -> list[dict[str, Any]]:
    """The worker's answer of every rank (rank order), written under `answers`; asserts its exit status."""
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    full_env = base | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"} | (env or {})
    answers.mkdir(parents=True)
    worker = ["-m", "tests.trainer.checkpoint.worker", str(output_dir), "--answers", str(answers), *args]
    if ranks == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *worker]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    said = " ".join(p.read_text() for p in sorted(answers.glob("rank*.json")))
    assert proc.returncode == expect, said + proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((answers / f"rank{r}.json").read_text()) for r in range(ranks)]


@pytest.fixture
def worker(tmp_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """worker(output_dir, *args, env=, ranks=, expect=) -> every rank's answer."""
    calls = itertools.count()
    return lambda *args, **kwargs: run_worker(tmp_path / f"answers{next(calls)}", *args, **kwargs)
