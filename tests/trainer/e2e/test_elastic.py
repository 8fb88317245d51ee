"""Elastic resume: a run checkpointed on 2 ranks continues on 1, and that run's checkpoint continues on 2
again, with the global batch held by the accumulation, the ZeRO-2 optimizer state re-partitioned through
DeepSpeed's universal format, and the losses and samples of an uninterrupted run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.trainer.e2e.conftest import launch, train_records
from trainer.checkpoint.layout import UNIVERSAL, tag_for
from trainer.data.sample_log import trained_ids

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS, EVERY, GLOBAL_BATCH = 9, 3, 8


def _args(corpus: Path, out: Path, *resume: str) -> list[str]:
    return [
        "--config", "tiny", f"output_dir={out}", f"data.train={corpus / 'train'}", "data.eval=null",
        "data.batch_size=4", f"data.global_batch_size={GLOBAL_BATCH}", "data.num_workers=1", "model.queue_size=12",
        "engine.precision=fp32", f"optim.max_steps={STEPS}", "optim.warmup_steps=2", f"checkpoint.every_steps={EVERY}",
        "checkpoint.keep_last=3", "log.every_steps=1", "log.sample_ids=true", "seed=0", *resume,
    ]


def _run(args: list[str], log: Path, ranks: int) -> str:
    proc = launch(args, log, ranks=ranks)
    try:
        code = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 0, text[-4000:]
    return text


def _global_batches(out: Path) -> dict[int, list[int]]:
    """step -> the sorted sample ids of its global batch (every rank's micro-batches)."""
    return {step: sorted(i for _, ids in ranks.values() for i in ids) for step, ranks in trained_ids(out).items()}


def test_resume_on_fewer_then_more_ranks_continues_the_run(demo_corpus: Path, tmp_path: Path) -> None:
    reference, shrunk, grown = tmp_path / "reference", tmp_path / "shrunk", tmp_path / "grown"
    _run(_args(demo_corpus, reference), tmp_path / "reference.log", ranks=2)
    # 2 -> 1 rank from step 3 (accumulation 1 -> 2), then that run's step 6 on 2 ranks again (2 -> 1)
    saved_on_2 = reference / "checkpoints" / tag_for(EVERY)
    log = _run(_args(demo_corpus, shrunk, "--resume", str(saved_on_2)), tmp_path / "shrunk.log", ranks=1)
    assert f"elastic resume of {tag_for(EVERY)}: 2 -> 1 ranks" in log
    saved_on_1 = shrunk / "checkpoints" / tag_for(2 * EVERY)
    log = _run(_args(demo_corpus, grown, "--resume", str(saved_on_1)), tmp_path / "grown.log", ranks=2)
    assert f"elastic resume of {tag_for(2 * EVERY)}: 1 -> 2 ranks" in log
    for converted in (saved_on_2, saved_on_1):  # converted once, kept for the next change
        assert (converted / UNIVERSAL / "complete").is_file()

    # Bit-identical losses, learning rates and temperatures: on CPU in fp32, one rank accumulating two
    # micro-batches and two ranks all-reducing theirs add the same two gradients (a + b is exact in either
    # order) and scale them by the same 1/2; data, masks, negatives and queues are the same by construction.
    # With more than two partial sums the order of the additions differs and the last bits may too.
    want = train_records(reference)
    for run, steps in ((shrunk, range(EVERY + 1, STEPS + 1)), (grown, range(2 * EVERY + 1, STEPS + 1))):
        got = train_records(run)
        assert sorted(got) == list(steps)
        for step in steps:
            assert got[step]["losses"] == want[step]["losses"], (run.name, step)
            assert (got[step]["lr"], got[step]["temp"]) == (want[step]["lr"], want[step]["temp"]), (run.name, step)

    # the same global batches step by step; across both changes no sample is trained twice or skipped
    batches = _global_batches(reference)
    shrunk_batches, grown_batches = _global_batches(shrunk), _global_batches(grown)
    assert all(shrunk_batches[s] == batches[s] for s in range(EVERY + 1, STEPS + 1))
    assert all(grown_batches[s] == batches[s] for s in range(2 * EVERY + 1, STEPS + 1))
    trained = [i for s in range(1, EVERY + 1) for i in batches[s]]
    trained += [i for s in range(EVERY + 1, 2 * EVERY + 1) for i in shrunk_batches[s]]
    trained += [i for s in range(2 * EVERY + 1, STEPS + 1) for i in grown_batches[s]]
    assert len(trained) == len(set(trained)) == STEPS * GLOBAL_BATCH
