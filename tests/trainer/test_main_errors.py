"""`trainer/main.py` fails fast with one clear line, before any process group starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainer.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--config", "no_such_config"], "no such file and no preset"),
        (["--config", "tiny", "model.vision.depthh=3"], "model.vision.depthh: unknown key"),
        (["--config", "tiny", "data.train=/nonexistent/shards"], "data.train: no MDS dataset at '/nonexistent/shards'"),
        (["--config", "tiny", "optim.lr=fast"], "optim.lr"),
    ],
)
def test_bad_input_is_one_clear_error(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err


def test_script_entry_point_reports_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("optim: {lr: [}")
    proc = subprocess.run([sys.executable, str(REPO / "trainer" / "main.py"), "--config", str(bad)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "is not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
