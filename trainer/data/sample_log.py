"""`log.sample_ids`: which samples each rank trained at each step, one JSONL file per rank.

A run that is killed and resumed repeats the steps after its last checkpoint; keeping, per (step, rank),
the line written last gives what the finished model was trained on. `trained_ids` does that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

DIRNAME = "sample_ids"


class SampleLog:
    """Appends `{"step", "epoch", "ids"}` per step to output_dir/sample_ids/rank{r}.jsonl (line-buffered:
    a killed rank loses at most the line being written)."""

    def __init__(self, output_dir: Path, rank: int) -> None:
        self.path = Path(output_dir) / DIRNAME / f"rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)

    def write(self, step: int, epoch: int, ids: Iterable[int]) -> None:
        self._file.write(json.dumps({"step": step, "epoch": epoch, "ids": [int(i) for i in ids]}) + "\n")

    def close(self) -> None:
        self._file.close()


def trained_ids(output_dir: Path) -> dict[int, dict[int, tuple[int, list[int]]]]:
    """step -> rank -> (epoch, ids) over every rank's file, the last line of each (step, rank) winning
    (an unfinished last line of a killed rank is skipped)."""
    steps: dict[int, dict[int, tuple[int, list[int]]]] = {}
    for path in sorted((Path(output_dir) / DIRNAME).glob("rank*.jsonl")):
        rank = int(path.stem.removeprefix("rank"))
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            steps.setdefault(record["step"], {})[rank] = (record["epoch"], record["ids"])
    return steps
