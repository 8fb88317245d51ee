"""model.momentum_warmup_steps: the EMA coefficient rises from momentum_start to momentum on a half cosine."""

from __future__ import annotations

import itertools
import math

import pytest

from trainer.config import ModelConfig
from trainer.engine.schedule import momentum_coefficient


def test_without_warmup_every_step_has_the_papers_constant_momentum() -> None:
    cfg = ModelConfig()
    assert cfg.momentum_warmup_steps == 0
    assert [momentum_coefficient(step, cfg) for step in (0, 1, 186, 10**6)] == [0.995] * 4


def test_cosine_warmup_at_start_quarter_middle_and_end() -> None:
    """0.9 -> 0.995 over 100 steps: m(t) = 0.995 - 0.095 * (1 + cos(pi t / 100)) / 2, then 0.995."""
    cfg = ModelConfig(momentum=0.995, momentum_start=0.9, momentum_warmup_steps=100)
    assert momentum_coefficient(0, cfg) == pytest.approx(0.9)
    assert momentum_coefficient(25, cfg) == pytest.approx(0.995 - 0.0475 * (1 + math.sqrt(0.5)))  # 0.913912
    assert momentum_coefficient(50, cfg) == pytest.approx(0.9475)
    assert momentum_coefficient(100, cfg) == 0.995
    assert momentum_coefficient(5000, cfg) == 0.995
    values = [momentum_coefficient(step, cfg) for step in range(101)]
    assert all(a < b for a, b in itertools.pairwise(values))
