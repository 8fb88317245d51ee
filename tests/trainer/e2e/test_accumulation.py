"""Gradient accumulation under the real launcher: 1 rank x 2 micro-batches against 2 ranks x 1, same global batch.

Every term of the objective is computed per micro-batch of B rows on both sides (CMA/IMC in-batch columns,
the queue as it was before the step, LMI and ITM negatives, MLM masks), with the same rows, caption widths
and seeds, and the queue takes the micro-batches in the same (micro-major) order. The two micro-batch
gradients are combined as (g0 + g1) / 2 on both sides (DeepSpeed halves the loss before backward on one
rank, and averages the two ranks' gradients on two): halving is exact and a sum of two is commutative, so
the optimizer update is bit for bit the same, and so are the losses, lr, temperature, weights, fp32
momentum encoder and queues after the steps. (With more than two micro-batches the sums are ordered
differently, which would leave rounding-level differences.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from tests.trainer.e2e.conftest import launch, train_records
from trainer.config import load
from trainer.engine import distill_alpha, learning_rate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 3
SAMPLES = 96  # demo_corpus's n_train


def _args(corpus: Path, out: Path) -> list[str]:
    # fp32 on CPU; queue 12 is not a multiple of the 8 entries a step writes (the writes wrap around).
    return [
        "--config", "tiny", f"output_dir={out}", f"data.train={corpus / 'train'}", "data.eval=null",
        "data.batch_size=4", "data.global_batch_size=8", "data.num_workers=1", "model.queue_size=12",
        "engine.precision=fp32", f"optim.max_steps={STEPS}", "optim.warmup_steps=2", "checkpoint.every_steps=2",
        "log.every_steps=1",
    ]


def _finish(proc, log: Path, timeout: float) -> None:
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _state(run: Path, step: int) -> dict:
    return torch.load(
        run / "checkpoints" / f"step_{step:08d}" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
    )


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    differ = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differ, f"{what}: {differ}"


@pytest.fixture(scope="module")
def runs(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(1 rank accumulating 2 micro-batches of 4, 2 ranks of 4), both to step 3. One after the other:
    streaming picks a job's shared-memory prefix by probing /dev/shm, and two jobs starting at the same
    moment on one host could probe alike."""
    root = tmp_path_factory.mktemp("accumulation")
    accumulated, parallel = root / "accumulated", root / "parallel"
    for out, ranks in ((accumulated, 1), (parallel, 2)):
        log = root / f"{out.name}.log"
        _finish(launch(_args(demo_corpus, out), log, ranks=ranks), log, 400)
        assert f"global batch 8 = 4 per micro-batch x {ranks} ranks x {2 // ranks} accumulation" in log.read_text()
    return accumulated, parallel


def test_one_rank_accumulating_equals_two_ranks(runs: tuple[Path, Path]) -> None:
    accumulated, parallel = runs
    got, want = train_records(accumulated), train_records(parallel)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in got:
        assert got[step]["losses"] == want[step]["losses"], f"step {step}"
        assert (got[step]["lr"], got[step]["temp"]) == (want[step]["lr"], want[step]["temp"]), f"step {step}"
    a, b = _state(accumulated, STEPS), _state(parallel, STEPS)
    _assert_same_tensors(a["module"], b["module"], "online weights")
    _assert_same_tensors(a["teacher"], b["teacher"], "momentum encoder")
    _assert_same_tensors(a["queues"], b["queues"], "queues")
    assert int(a["queues"]["ptr"]) == STEPS * 8 % 12
    # the same samples were consumed: streaming's position counts the global batch on both
    assert a["loader"]["sample_in_epoch"] == b["loader"]["sample_in_epoch"] == STEPS * 8


def test_schedules_and_checkpoints_count_optimizer_steps(runs: tuple[Path, Path]) -> None:
    accumulated, _ = runs
    cfg = load("tiny", _args(Path("."), accumulated)[2:])
    steps_per_epoch = SAMPLES // 8  # optimizer steps of a global batch 8 (micro-batches would give 24)
    for step, record in train_records(accumulated).items():
        assert record["lr"] == pytest.approx(learning_rate(step, STEPS, cfg.optim), rel=1e-12)
        assert record["alpha"] == pytest.approx(distill_alpha(step - 1, steps_per_epoch, cfg.loss), rel=1e-12)
    # checkpoint.every_steps=2 and the final step: optimizer steps 2 and 3, and DeepSpeed counted 3 updates
    assert sorted(p.name for p in (accumulated / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000003"]
    state = _state(accumulated, STEPS)
    assert (state["step"], state["global_steps"], state["global_samples"]) == (STEPS, STEPS, STEPS * 8)
