"""Shared pieces of the end-to-end tests: a demo corpus and the real deepspeed launcher on 2 CPU ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dataprep.synth import write_demo_corpus

    root = tmp_path_factory.mktemp("demo-corpus")
    write_demo_corpus(root, n_train=96, n_eval=24, seed=0, size=64)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], log: Path, ranks: int = 2) -> subprocess.Popen:
    """`deepspeed --num_gpus N trainer/main.py ARGS` in its own process group, output to `log`."""
    launcher_set = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_set} | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(ranks),
           "--master_port", str(free_port()), str(REPO / "trainer" / "main.py"), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def train_records(run_dir: Path) -> dict[int, dict]:
    """step -> the last train record logged for it (a resumed run logs some steps twice)."""
    out: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            out[record["step"]] = record
    return out
