"""What a resume plan does to the config before the engine is built: the saved global batch held on
another world size (the accumulation follows), load_universal on an elastic resume, and refusals."""

from __future__ import annotations

import pytest

from trainer.checkpoint import ResumePlan
from trainer.config import ConfigError, load, resolve_batch


def _plan(saved_world: int, world: int, global_batch: int = 8) -> ResumePlan:
    return ResumePlan("step_00000003", "file:///x/checkpoints", saved_world, world, {"global_batch": global_batch})


def test_same_world_size_changes_nothing() -> None:
    cfg = load("tiny", ["data.batch_size=4"])
    adapted = _plan(2, 2).adapt(cfg)
    assert adapted == cfg and not _plan(2, 2).elastic


@pytest.mark.parametrize(("saved", "world", "accum"), [(2, 1, 4), (1, 2, 2), (1, 4, 1), (4, 2, 2)])
def test_elastic_resume_holds_the_global_batch(saved: int, world: int, accum: int) -> None:
    cfg = load("tiny", ["data.batch_size=4"])  # 16 samples a step, saved with accumulation 16 / (4 x saved)
    adapted = _plan(saved, world, global_batch=16).adapt(cfg)
    assert adapted.checkpoint.load_universal
    plan = resolve_batch(adapted, world)
    assert (plan.global_batch, plan.world, plan.accum) == (16, world, accum)


def test_a_global_batch_the_new_world_cannot_compose_is_refused() -> None:
    adapted = _plan(2, 3).adapt(load("tiny", ["data.batch_size=4"]))  # 8 samples over 3 ranks of 4
    with pytest.raises(ConfigError, match="data.global_batch_size 8 is not data.batch_size 4 x 3 ranks"):
        resolve_batch(adapted, 3)


def test_a_different_explicit_global_batch_is_refused() -> None:
    cfg = load("tiny", ["data.batch_size=4", "data.global_batch_size=16"])
    with pytest.raises(ConfigError, match="trained with a global batch of 8.*set data.global_batch_size=8"):
        _plan(2, 1).adapt(cfg)
