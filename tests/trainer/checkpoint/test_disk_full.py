"""A full disk during a save, for real: output_dir on a small tmpfs that holds one checkpoint, not two."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trainer.checkpoint.layout import POINTER, tag_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WIDTH = 1024
"""A 1024 x 1024 layer: about 4 MB of weights and 12 MB of fp32 master copy and Adam moments a checkpoint."""


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=28m", "tcl-full-disk", str(disk)], check=True, timeout=10)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, timeout=10)


def test_a_full_disk_fails_the_save_and_keeps_the_previous_checkpoint(worker, small_disk: Path, tmp_path: Path) -> None:
    (reference,) = worker(tmp_path / "reference", "--width", str(WIDTH), "--steps", "1", "--save", "1")
    out = small_disk / "run"
    (failed,) = worker(out, "--width", str(WIDTH), "--steps", "2", "--save", "1,2", "checkpoint.keep_last=1",
                       expect=3)
    error = failed["error"]
    assert f"{tag_for(2)} could not be saved" in error and "the disk is full" in error, error
    assert f"previous complete checkpoint {tag_for(1)} is untouched" in error
    ckpts = out / "checkpoints"
    assert (ckpts / POINTER).read_text() == tag_for(1)
    assert not (ckpts / tag_for(2)).exists()  # the partial save was removed, freeing the disk
    (resumed,) = worker(out, "--width", str(WIDTH), "--steps", "1", "--resume", "auto")
    assert resumed["resumed"] == tag_for(1) and resumed["weights"] == reference["weights"]
