"""A conversion worker that dies for real (SIGKILL) does not abort the job: the batches in flight are retried
once, the one whose worker dies again is rejected as worker_crashed, and every other record is converted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dataprep.convert import ConvertConfig, convert
from dataprep.reader import iter_rows
from dataprep.schema import REJECTS_NAME
from dataprep.sources import SourceSpec
from dataprep.storage import open_store
from tests.security.hostile_inputs import jpeg

KILLER = b"KILL THIS WORKER"

# Installed in the spawned workers only (through PYTHONPATH): the decoder kills its own process with SIGKILL,
# as the OOM killer or a crash in a C decoder would end it, when it is handed the killer file's bytes.
SITECUSTOMIZE = f'''
import io, os, signal
from PIL import Image

_open = Image.open


def _open_or_die(fp, *args, **kwargs):
    if isinstance(fp, io.BytesIO) and fp.getvalue().startswith({KILLER!r}):
        os.kill(os.getpid(), signal.SIGKILL)
    return _open(fp, *args, **kwargs)


Image.open = _open_or_die
'''


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_killed_by_sigkill_costs_only_its_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])))
    entries = []
    for i in range(12):
        name = f"{i}.jpg"
        (tmp_path / name).write_bytes(KILLER if i == 7 else jpeg((20 * i, 100, 200 - 10 * i)))
        entries.append({"image": name, "caption": f"picture {i}"})
    (tmp_path / "corpus.json").write_text(json.dumps(entries))
    config = ConvertConfig(out=str(tmp_path / "out"), workers=2, batch_size=2,
                           sources=[SourceSpec(format="albef_json", path=str(tmp_path / "corpus.json"))])
    result = convert(config)
    dataset = open_store(result.datasets["train"].location)
    assert sorted(row["sample_id"] for row in iter_rows(dataset)) == sorted(
        f"corpus:{i}" for i in range(12) if i not in (6, 7))  # 7 and its batch mate 6
    rejects = [json.loads(line) for line in dataset.read_text(REJECTS_NAME).splitlines()]
    assert [(r["key"], r["reason"]) for r in rejects] == [("6", "worker_crashed"), ("7", "worker_crashed")]
    assert result.datasets["train"].manifest.rejected == {"worker_crashed": 2}
