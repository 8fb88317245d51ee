"""The demo learns: configs/demo.yaml on the synthetic corpus, 2 CPU ranks under the real launcher,
ends with held-out retrieval well above chance. (The README states the full demo's figures.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.e2e.conftest import launch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

EPOCHS = 6
N_EVAL = 200


def chance_recall(k: int, n_images: int) -> float:
    """% chance that the right image (or one of an image's 5 captions among 5 n texts) is in a random top k:
    k / n both ways, to first order."""
    return 100.0 * k / n_images


def test_demo_reaches_retrieval_well_above_chance(tmp_path: Path) -> None:
    from dataprep.synth import write_demo_corpus

    corpus, out = tmp_path / "corpus", tmp_path / "run"
    write_demo_corpus(corpus, n_train=2000, n_eval=N_EVAL, seed=0)
    proc = launch(
        ["--config", "demo", f"output_dir={out}", f"data.train={corpus / 'train'}", f"data.eval={corpus / 'eval'}",
         f"optim.epochs={EPOCHS}", "eval.every_steps=100000", "checkpoint.every_steps=100000"],
        tmp_path / "demo.log",
    )
    assert proc.wait(timeout=1100) == 0, (tmp_path / "demo.log").read_text()[-3000:]
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    recall = [r for r in evals if r["kind"] == "eval"][-1]["recall"]
    chance_mean = sum(chance_recall(k, N_EVAL) for k in (1, 5, 10)) / 3
    assert recall["r_mean"] > 2 * chance_mean, recall
    for k in (5, 10):
        assert (recall[f"tr_r{k}"] + recall[f"ir_r{k}"]) / 2 > 2 * chance_recall(k, N_EVAL), recall
    assert (out / "metrics.png").is_file() and (out / "checkpoints" / "latest").is_file()
