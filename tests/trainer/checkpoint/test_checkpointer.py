"""The Checkpointer with a real DeepSpeed ZeRO-2 engine and real files: what `--resume` picks when the
pointer or a checkpoint is damaged, `--resume PATH`, pruning, and metrics.jsonl after a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.checkpoint.layout import POINTER, tag_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _zero_file(tag_dir: Path) -> Path:
    return next(tag_dir.glob("zero_pp_rank_0_*optim_states.pt"))


def test_resume_picks_the_newest_complete_checkpoint(worker, tmp_path: Path) -> None:
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    (reference,) = worker(out, "--steps", "4", "--save", "1,2,3,4", "checkpoint.keep_last=3")
    assert sorted(p.name for p in ckpts.glob("step_*")) == [tag_for(2), tag_for(3), tag_for(4)]  # 1 pruned
    assert (ckpts / POINTER).read_text() == tag_for(4)
    records = [{"kind": "train", "step": s} for s in (1, 2, 3, 4)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tr')

    # the newest is torn (a truncated optimizer partition) and the pointer is garbage: step 3 it is
    zero = _zero_file(ckpts / tag_for(4))
    zero.write_bytes(zero.read_bytes()[:100])
    (ckpts / POINTER).write_text("step_000")
    (resumed,) = worker(out, "--steps", "4", "--save", "4", "--resume", "auto", "checkpoint.keep_last=3")
    assert resumed["resumed"] == tag_for(3) and resumed["steps"] == [4]
    assert resumed["weights"] == reference["weights"]  # step 4 retrained from step 3's state: identical
    # metrics past the resumed step (and the torn last line) were dropped before step 4 was retrained
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    # an empty pointer: the newest complete one (4, rewritten by the resumed run)
    (ckpts / POINTER).write_text("")
    (again,) = worker(out, "--steps", "4", "--resume", "auto")
    assert again["resumed"] == tag_for(4) and again["steps"] == [] and again["weights"] == reference["weights"]


def test_resume_path_loads_exactly_that_checkpoint_or_refuses(worker, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (reference,) = worker(src, "--steps", "3", "--save", "1,2,3", "checkpoint.keep_last=3")
    # from another run's folder, not the newest: exactly step 1, then training continues into dst
    (resumed,) = worker(dst, "--steps", "3", "--save", "3", "--resume", str(src / "checkpoints" / tag_for(1)))
    assert resumed["resumed"] == tag_for(1) and resumed["steps"] == [2, 3]
    assert resumed["weights"] == reference["weights"]
    assert (dst / "checkpoints" / POINTER).read_text() == tag_for(3)

    (src / "checkpoints" / tag_for(2) / "rng_rank0.pt").unlink()
    (refused,) = worker(dst, "--resume", str(src / "checkpoints" / tag_for(2)), expect=3)
    assert "not a complete checkpoint" in refused["error"] and "rng_rank0.pt" in refused["error"]
    (refused,) = worker(dst, "--resume", str(src / "checkpoints" / "latest"), expect=3)
    assert "not a checkpoint folder" in refused["error"]


def test_a_checkpoint_missing_one_ranks_part_is_not_complete(worker, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = worker(out, "--steps", "2", "--save", "1,2", ranks=2)
    assert len(first) == 2 and first[0]["weights"] == first[1]["weights"]
    (out / "checkpoints" / tag_for(2) / "rank_1.json").unlink()  # rank 1 died before its manifest
    resumed = worker(out, "--steps", "2", "--resume", "auto", ranks=2)
    assert [r["resumed"] for r in resumed] == [tag_for(1), tag_for(1)]  # both ranks, the same older tag
    assert [r["weights"] for r in resumed] == [first[0]["weights"]] * 2
