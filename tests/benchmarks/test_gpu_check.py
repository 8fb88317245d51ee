"""The prepared GPU script stays runnable: its dry run (no GPU, toy sizes) passes every step, and a step that
fails makes the script fail (it once reported `parity=failed` and still exited 0).

The dry run's training step is the throughput benchmark's tiny smoke run; its phase breakdown is checked here.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _run(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE")}
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=base | {"OUT": str(out), "PYTHON": sys.executable} | env,
        capture_output=True, text=True, timeout=580, check=False,
    )


def test_dry_run_passes_every_step_and_times_every_phase(tmp_path: Path) -> None:
    proc = _run(tmp_path / "out")
    log = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, log
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "steps: corpus=ok;kernels=ok;loader=ok;parity=ok;train=ok" in summary, summary
    assert "every step ok" in proc.stdout

    results = json.loads((tmp_path / "out" / "train.json").read_text())
    assert [r["variant"] for r in results] == ["eager", "fused"]
    for r in results:
        b = r["breakdown_ms"]
        for phase in ("augment", "ema", "momentum", "forward", "backward", "optimizer", "queue"):
            assert b[phase] > 0, f"{r['variant']}: phase {phase} was not timed"
        assert b["other"] >= 0, f"{r['variant']}: the timed phases overlap or count twice"
        assert math.isfinite(r["final_loss"])
    # same seeds and batches; without a GPU both variants take the reference path: identical training
    assert results[0]["final_loss"] == results[1]["final_loss"]
    kernels = json.loads((tmp_path / "out" / "kernels.json").read_text())
    assert kernels, "kernel_bench wrote no result"


def test_failed_steps_fail_the_script(tmp_path: Path) -> None:
    """A Python whose every step module exits 3 at once (only the summary runs): the script must exit 1 and
    name each failed step; the loader step, which needs the corpus, is not run."""
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1" == -m && "$2" != benchmarks.gpu_summary ]]; then echo "planted failure" >&2; exit 3; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    proc = _run(tmp_path / "out", PYTHON=str(wrapper))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED steps: corpus kernels parity train" in proc.stdout
    summary = (tmp_path / "out" / "summary.md").read_text()
    expected = ";".join(f"{step}=failed (exit 3)" for step in ("corpus", "kernels", "parity", "train"))
    assert f"steps: {expected}" in summary
