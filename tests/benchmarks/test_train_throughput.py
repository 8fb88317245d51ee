"""The throughput benchmark end to end on CPU: the tiny preset through the project's model, engine and step."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_smoke_run_reports_every_phase(tmp_path):
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_throughput", "--config", "tiny", "--steps", "2", "--warmup", "1",
         "--json", str(out)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["variant"] for r in results] == ["eager", "fused"]
    for r in results:
        b = r["breakdown_ms"]
        for phase in ("augment", "ema", "momentum", "forward", "backward", "optimizer", "queue"):
            assert b[phase] > 0, f"{r['variant']}: phase {phase} was not timed"
        assert b["other"] >= 0, f"{r['variant']}: the timed phases overlap or count twice"
        assert math.isfinite(r["final_loss"])
    # same seeds and batches; without a GPU both variants take the reference path: identical training
    assert results[0]["final_loss"] == results[1]["final_loss"]
    assert "samples/s" in proc.stdout and "eager" in proc.stdout
