"""Fixtures: a tiny MDS corpus shared by the session, and configs pointing at it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.trainer.data.data_corpus import corpus_rows, write_mds
from trainer.config import RunConfig, load


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_mds(tmp_path_factory.mktemp("mds") / "train", corpus_rows())


@pytest.fixture
def make_cfg(corpus: str, tmp_path: Path) -> Callable[..., RunConfig]:
    """The tiny preset (64 px) over the test corpus, no workers, batch 4, plus dotted overrides."""

    def make(*overrides: str) -> RunConfig:
        base = [f"data.train={corpus}", f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0",
                "data.batch_size=4", "seed=7"]
        return load("tiny", base + list(overrides))

    return make
