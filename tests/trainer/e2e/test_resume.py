"""Kill a 2-rank DeepSpeed run after a checkpoint, resume it, and get the losses of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.trainer.e2e.conftest import launch, train_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _args(corpus: Path, out: Path, seed: int = 0) -> list[str]:
    # fp32 on CPU: the resumed losses must be bit-identical. Queue 12 is not a multiple of B * W = 8.
    return [
        "--config", "tiny", f"output_dir={out}", f"data.train={corpus / 'train'}", "data.eval=null",
        "data.batch_size=4", "data.num_workers=1", "model.queue_size=12", "engine.precision=fp32",
        "optim.max_steps=7", "optim.warmup_steps=2", "checkpoint.every_steps=3", "log.every_steps=1",
        f"seed={seed}",
    ]


def _wait(proc, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_killed_run_resumes_to_the_same_losses(demo_corpus: Path, tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    assert _wait(launch(_args(demo_corpus, reference_dir), tmp_path / "reference.log"), 400) == 0
    reference = train_records(reference_dir)
    assert sorted(reference) == list(range(1, 8))

    proc = launch(_args(demo_corpus, killed_dir), tmp_path / "killed.log")
    pointer = killed_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 400
    while not (pointer.is_file() and pointer.read_text().strip() == "step_00000003"):
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no complete checkpoint at step 3"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # every rank and the launcher, no chance to clean up
    proc.wait()
    done_before_kill = max(train_records(killed_dir))
    assert done_before_kill < 7, "the run finished before it could be killed"

    resumed = launch(_args(demo_corpus, killed_dir) + ["--resume", "auto"], tmp_path / "resumed.log")
    assert _wait(resumed, 400) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert "resumed at step 3" in (tmp_path / "resumed.log").read_text()
    got = train_records(killed_dir)
    for step in range(1, 8):
        assert got[step]["losses"] == reference[step]["losses"], f"step {step}"
        assert (got[step]["lr"], got[step]["temp"]) == (reference[step]["lr"], reference[step]["temp"])
    # the checkpoint cadence continued after the resume: 6 and the final 7 are complete, 3 was pruned (keep_last 2)
    assert pointer.read_text().strip() == "step_00000007"
    assert sorted(p.name for p in (killed_dir / "checkpoints").glob("step_*")) == ["step_00000006", "step_00000007"]
