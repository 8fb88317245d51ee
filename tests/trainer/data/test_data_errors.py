"""Bad data and bad set-ups fail with an error that names the problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dataprep.schema import COLUMNS
from tests.trainer.data.data_corpus import corpus_rows, write_mds
from trainer.config import RunConfig
from trainer.data.loader import build_train_loader


def test_corrupt_image_names_the_sample(make_cfg: Callable[..., RunConfig], tmp_path: Path) -> None:
    rows = corpus_rows(8)
    rows[5]["image"] = rows[5]["image"][:40]  # a truncated file
    cfg = make_cfg(f"data.train={write_mds(tmp_path / 'bad', rows)}", "data.shuffle=false")
    with pytest.raises(ValueError, match=r"row 5 \(sample_id 'sample-0005'\): bad image"):
        list(build_train_loader(cfg, rank=0, world_size=1))


def test_missing_dataset_and_columns(make_cfg: Callable[..., RunConfig], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data.train = '.*nowhere': no MDS index.json"):
        build_train_loader(make_cfg(f"data.train={tmp_path / 'nowhere'}"), rank=0, world_size=1)
    columns = {k: v for k, v in COLUMNS.items() if k != "sample_id"}
    rows = [{k: v for k, v in r.items() if k != "sample_id"} for r in corpus_rows(4)]
    cfg = make_cfg(f"data.train={write_mds(tmp_path / 'no-id', rows, columns)}")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sample_id'\]"):
        build_train_loader(cfg, rank=0, world_size=1)


def test_world_must_match_the_environment(make_cfg: Callable[..., RunConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="loader built for rank 1 of 2, but the environment says RANK=0 WORLD_SIZE=1"):
        build_train_loader(make_cfg(), rank=1, world_size=2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE is not set: call prepare_streaming_env"):
        build_train_loader(make_cfg(), rank=1, world_size=2)
