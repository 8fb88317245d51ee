"""The on-disk facts a resume relies on, with real files: manifests, the pointer, durable writes, RNG state."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint.layout import (
    POINTER,
    Manifest,
    missing_files,
    read_pointer,
    step_of,
    tag_for,
    tags,
    write_durably,
)
from trainer.checkpoint.rng import load_rng_state, rng_state
from trainer.checkpoint.storage import LocalStorage


def test_tags_name_steps_and_sort_by_step() -> None:
    assert tag_for(12) == "step_00000012" and step_of("step_00000012") == 12
    assert step_of(tag_for(123456789)) == 123456789  # past 8 digits the tag just grows
    for not_a_tag in ("", "step_12", "latest", "step_0000001x", "step_00000001/"):
        assert step_of(not_a_tag) is None
    listing = {"step_123456789/a": 1, "step_00000002/a": 1, "step_00000010/b": 2, "latest": 13, "zero_to_fp32.py": 5}
    assert tags(listing) == ["step_00000002", "step_00000010", "step_123456789"]


def test_manifest_round_trip_and_damaged_ones_are_none() -> None:
    files = {"zero_pp_rank_1_mp_rank_00_optim_states.pt": 1234, "rng_rank1.pt": 56}
    manifest = Manifest(1, 2, files, {"global_batch": 8})
    assert Manifest.from_json(manifest.to_json()) == manifest
    text = manifest.to_json()
    for damaged in ("", text[: len(text) // 2], "[]", '{"rank": 2, "world_size": 2, "files": {}}', "null"):
        assert Manifest.from_json(damaged) is None, damaged


def test_missing_files_sees_absent_and_truncated_files(tmp_path: Path) -> None:
    tag = tag_for(3)
    (tmp_path / tag).mkdir()
    (tmp_path / tag / "a.pt").write_bytes(b"x" * 10)
    (tmp_path / tag / "b.pt").write_bytes(b"y" * 4)  # torn: 4 of 8 bytes
    manifest = Manifest(0, 1, {"a.pt": 10, "b.pt": 8, "c.pt": 1})
    listing = LocalStorage(tmp_path).list()
    assert sorted(missing_files(manifest, tag, listing)) == ["b.pt", "c.pt"]


def test_pointer_empty_torn_or_garbage_reads_as_none(tmp_path: Path) -> None:
    assert read_pointer(tmp_path) is None  # missing
    for content in (b"", b"\n", b"step_000", b"\xff\xfe\x00garbage", b"../../etc"):
        (tmp_path / POINTER).write_bytes(content)
        assert read_pointer(tmp_path) is None, content
    write_durably(tmp_path / POINTER, tag_for(7))
    assert read_pointer(tmp_path) == tag_for(7)
    assert sorted(p.name for p in tmp_path.iterdir()) == [POINTER]  # no temp file left behind


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # a cached gaussian is part of numpy's state
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.normal(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    load_rng_state(tmp_path / "rng.pt")
    assert (random.random(), np.random.normal(), torch.rand(3).tolist()) == expected


class _Payload:
    def __reduce__(self):  # unpickling this runs Path.touch on the marker
        return (Path.touch, (Path(self.marker),))


def test_a_hostile_rng_file_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = str(marker)
    torch.save({"python": payload}, tmp_path / "rng.pt")  # what an attacker who can write the folder leaves
    with pytest.raises(pickle.UnpicklingError):
        load_rng_state(tmp_path / "rng.pt")
    assert not marker.exists()
    torch.load(tmp_path / "rng.pt", weights_only=False)  # the same file, trusted: the payload runs
    assert marker.exists()
