"""Fixtures of the model and objective tests (the helpers live in tcl_testing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.trainer.model.tcl_testing import TinyModels, build_tiny, tiny_model_config
from trainer.config import ModelConfig


@pytest.fixture
def model_cfg() -> ModelConfig:
    return tiny_model_config()


@pytest.fixture
def tiny(model_cfg: ModelConfig) -> TinyModels:
    return build_tiny(model_cfg)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is 10x faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
