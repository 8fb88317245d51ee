"""Done-when: a short 2-rank DeepSpeed run (ZeRO-2, gloo) evaluates in the loop at its end (re-rank sharded
over the 2 ranks); tcl-eval of its final checkpoint gives exactly those figures, in one process from the
step directory and under torchrun with 2 gloo ranks from its official export; every export format of it
loads back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.e2e.conftest import REPO, free_port, launch
from trainer import evaluate
from trainer import export as export_cli
from trainer.weights.load import read_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _env() -> dict[str, str]:
    launcher_set = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in launcher_set} | {"OMP_NUM_THREADS": "1"}


def _torchrun_tcl_eval(args: list[str], ranks: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                "--master_port", str(free_port()), "-m", "trainer.evaluate"]
    return subprocess.run([*launcher, *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dataprep.synth import write_demo_corpus

    corpus = tmp_path_factory.mktemp("corpus")
    write_demo_corpus(corpus, n_train=32, n_eval=16, seed=0, size=64)
    out = tmp_path_factory.mktemp("run")
    args = [
        "--config", "tiny", f"output_dir={out}", f"data.train={corpus / 'train'}", f"data.eval={corpus / 'eval'}",
        "data.batch_size=4", "data.num_workers=0", "engine.precision=fp32", "optim.max_steps=3",
        "optim.warmup_steps=1", "checkpoint.every_steps=100", "eval.every_steps=100", "eval.k_test=4",
        "eval.batch_size=8", "log.every_steps=1",
    ]
    proc = launch(args, out / "train.log")
    assert proc.wait(timeout=400) == 0, (out / "train.log").read_text()[-3000:]
    return out


def test_tcl_eval_of_the_final_checkpoint_equals_the_last_in_loop_evaluation(run_dir: Path) -> None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    in_loop = [r for r in records if r["kind"] == "eval"][-1]
    assert in_loop["step"] == 3
    step_dir = run_dir / "checkpoints" / "step_00000003"
    split = read_checkpoint(step_dir).config.data.eval

    assert evaluate.main([str(step_dir), "--split", split, "--num-workers", "0"]) == 0  # one process, in this one
    got = json.loads((run_dir / "checkpoints" / "step_00000003.retrieval-eval-64px.json").read_text())
    assert got["layout"] == "step directory" and got["world_size"] == 1
    assert got["recall"] == in_loop["recall"]

    official = run_dir / "tcl_tiny.pth"
    assert export_cli.main([str(run_dir / "checkpoints"), str(official), "--format", "official"]) == 0
    two = _torchrun_tcl_eval([str(official), "--split", split, "--config", str(run_dir / "config.yaml"),
                              "--num-workers", "0", "--output", str(run_dir / "official.json")], ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    got = json.loads((run_dir / "official.json").read_text())
    assert got["layout"] == "official" and got["world_size"] == 2
    assert got["recall"] == in_loop["recall"]


def test_every_export_format_of_the_run_loads_back(run_dir: Path, tmp_path: Path) -> None:
    import timm
    from transformers import BertModel

    step_dir = run_dir / "checkpoints" / "step_00000003"
    source = read_checkpoint(step_dir)
    outputs = {"tcl": tmp_path / "run.safetensors", "official": tmp_path / "run.pth", "hf": tmp_path / "hf"}
    for fmt, out in outputs.items():
        assert export_cli.main([str(step_dir), str(out), "--format", fmt]) == 0
    for path in (tmp_path / "run.safetensors", tmp_path / "run.pth"):
        back = read_checkpoint(path)
        assert sorted(back.state) == sorted(source.state)
        assert all(torch.equal(back.state[k], v) for k, v in source.state.items()), path
    assert read_checkpoint(tmp_path / "run.safetensors").config == source.config
    bert = BertModel.from_pretrained(tmp_path / "hf" / "text", add_pooling_layer=False)
    assert torch.equal(bert.encoder.layer[0].attention.self.query.weight,
                       source.state["online.text.bert.encoder.layer.0.attention.self.query.weight"])
    vit = timm.create_model(f"local-dir:{tmp_path / 'hf' / 'vision'}", pretrained=True)
    assert torch.equal(vit.pos_embed, source.state["online.visual_encoder.pos_embed"])


def test_model_init_from_the_step_directory_is_a_weights_only_start(run_dir: Path) -> None:
    """Continue pretraining from a run: online weights (fp32, consolidated from both ZeRO-2 partitions),
    momentum encoder and queues (with their pointer) from the client state; nothing else."""
    from trainer.config import load
    from trainer.model import build_model
    from trainer.weights.state import full_state

    step_dir = run_dir / "checkpoints" / "step_00000003"
    source = read_checkpoint(step_dir).state
    model, teacher, queues = build_model(load(str(run_dir / "config.yaml"), [f"model.init={step_dir}"]))
    loaded = full_state(model, teacher, queues)
    assert sorted(loaded) == sorted(source) and all(torch.equal(loaded[k], v) for k, v in source.items())
    assert int(queues.ptr) == (3 * 2 * 4) % queues.size, "3 steps x 2 ranks x 4 samples were enqueued"
    online = dict(model.named_parameters())
    lagging = [name for name, p in teacher.named_parameters() if not torch.equal(p, online[name])]
    assert lagging, "the EMA lags the online model"
