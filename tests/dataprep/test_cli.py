"""The command line: exit statuses, error messages, --config with flags on top, and a light entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dataprep.cli import main
from dataprep.job import JOB_FILE
from dataprep.reader import load_manifest
from dataprep.storage import open_store
from tests.dataprep.corpus import encode, picture

REPO = Path(__file__).resolve().parents[2]


def test_entry_point_imports_no_torch() -> None:
    """Spawned workers and `--help` re-import the entry point: it must not pull in streaming/torch."""
    code = "import sys, dataprep.__main__; print(sorted(m for m in ('torch', 'streaming') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "dataprep", "--help"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout
    assert all(command in help_text for command in ("convert", "inspect", "verify", "synth"))


def _records(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    entries = []
    for i in range(4):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(encode(picture(i, 40, 40), "JPEG"))
        entries.append({"image": f"images/{i}.jpg", "caption": f"number {i}"})
    entries.append({"image": "images/none.jpg", "caption": "gone"})
    path = tmp_path / "records.json"
    path.write_text(json.dumps(entries))
    return path


def test_config_file_with_flags_on_top(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    records = _records(tmp_path)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "ignored"), "sources": [{"format": "albef_json", "path": str(records)}],
        "images": {"max_short_side": 100}, "workers": 1,
    }))
    out = tmp_path / "out"
    assert main(["convert", str(out), "--config", str(config), "--max-short-side", "32", "--chunk-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "rejected:missing_file" in printed and f"train: {out}" in printed
    assert not (tmp_path / "ignored").exists()
    settings = json.loads((out / JOB_FILE).read_text())
    assert (settings["images"]["max_short_side"], settings["chunk_size"]) == (32, 2)
    assert {(r["width"], r["height"]) for r in _rows(out)} == {(32, 32)}

    assert main(["convert", str(out), "--config", str(config), "--max-short-side", "32", "--chunk-size", "2"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["convert", str(out), "--config", str(config), "--max-short-side", "32", "--chunk-size", "2",
                 "--max-reject-count", "0"]) == 1, "a finished job still reports its reject limit"
    assert "1 records rejected, more than the allowed 0" in capsys.readouterr().err


def _rows(location: Path) -> list[dict]:
    from dataprep.reader import iter_rows

    return list(iter_rows(open_store(location)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "format=albef_json,path"], "expected KEY=VALUE pairs"),
        (["--source", "format=lmdb,path=x"], "format"),
        (["--source", "format=albef_json,path=/nowhere/x.json"], "/nowhere/x.json: no such file"),
        (["--source", "format=csv,path=a.csv", "--source", "format=csv,path=b/a.csv"], "distinct `name`"),
        (["--workers", "0", "--source", "format=csv,path=a.csv"], "workers"),
        ([], "sources"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(["convert", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_a_failed_source_leaves_the_output_unclaimed(tmp_path: Path) -> None:
    records = _records(tmp_path)
    out = tmp_path / "out"
    good, missing = f"format=albef_json,path={records},name=a", f"format=jsonl,path={tmp_path / 'x.jsonl'},name=b"
    assert main(["convert", str(out), "--source", good, "--source", missing]) == 2
    assert not (out / JOB_FILE).exists()
    assert main(["convert", str(out), "--source", f"format=albef_json,path={records},name=a"]) == 0
    assert load_manifest(open_store(out)).samples == 4
