"""A dataset is untrusted input: its index.json chooses how each column is decoded. Every reader of the project
(`tcl-dataprep inspect` / `verify`, the trainer, the API) refuses a split whose columns are not exactly
dataprep's before any row is decoded, with one line naming the shard and the column."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streaming.base.format.mds import MDSReader

from dataprep.cli import main as dataprep_main
from dataprep.schema import COLUMNS, INDEX_NAME
from tests.security.untrusted_datasets import pickle_split, write_split
from trainer.config import AugmentConfig
from trainer.data.dataset import PretrainDataset
from trainer.main import main as trainer_main

SHARD = "shard.00000.mds"


def test_the_payload_is_real(tmp_path: Path) -> None:
    """What the refusals below prevent: decoding a row as the index declares runs the payload."""
    split = pickle_split(tmp_path / "split", marker := tmp_path / "pwned")
    shard = json.loads((split / INDEX_NAME).read_text())["shards"][0]
    data = (split / SHARD).read_bytes()
    begin, end = (int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "little") for i in (0, 1))
    MDSReader.from_json("", None, shard).decode_sample(data[begin:end])
    assert marker.read_text() == "the payload ran"


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_dataprep_refuses_a_pickle_column_unread(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    split = pickle_split(tmp_path / "split", marker := tmp_path / "pwned")
    assert dataprep_main([command, str(split)]) == 2
    error = capsys.readouterr().err
    assert f"shard {SHARD}: column 'caption' is encoded as 'pkl', expected 'json'" in error
    assert len(error.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize(("columns", "expected"), [
    ({**COLUMNS, "width": "str"}, f"shard {SHARD}: column 'width' is encoded as 'str', expected 'int32'"),
    ({**COLUMNS, "extra": "str"}, f"shard {SHARD}: column 'extra' (str) is not a dataprep column"),
    ({k: v for k, v in COLUMNS.items() if k != "source"}, f"shard {SHARD} lacks column(s) ['source']"),
])
def test_any_other_layout_is_refused(columns: dict[str, str], expected: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    """Encodings that streaming itself accepts (no pkl): only our own check refuses them."""
    split = write_split(tmp_path / "split", columns, "a caption")
    assert dataprep_main(["inspect", str(split)]) == 2
    assert expected in capsys.readouterr().err
    with pytest.raises(ValueError, match=re.escape(f"MDS split {split}: {expected}")):
        PretrainDataset(local=str(split), remote=None, aug=AugmentConfig(), img_size=32, max_words=30, seed=0,
                        batch_size=1, shuffle=False)


def test_the_trainer_refuses_a_pickle_column_at_start_up(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    split = pickle_split(tmp_path / "split", marker := tmp_path / "pwned")
    assert trainer_main(["--config", "tiny", f"data.train={split}", "data.eval=null"]) == 2
    assert f"data.train: shard {SHARD}: column 'caption' is encoded as 'pkl'" in capsys.readouterr().err
    assert not marker.exists()


def test_an_index_naming_files_outside_the_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    split = write_split(tmp_path / "split", COLUMNS, "a caption")
    index = json.loads((split / INDEX_NAME).read_text())
    index["shards"][0]["raw_data"]["basename"] = "../../etc/passwd"
    (split / INDEX_NAME).write_text(json.dumps(index))
    assert dataprep_main(["inspect", str(split)]) == 2
    assert "names a file outside the dataset folder: '../../etc/passwd'" in capsys.readouterr().err
