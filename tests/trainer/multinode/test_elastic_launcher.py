"""torchrun's elastic mode on namespace hosts: `--nnodes 1:2 --max-restarts 1`, node 1 SIGKILLed after a
checkpoint, and torchrun on node 0 restarts its worker on the one node left, which resumes the 2-rank
checkpoint on 1 rank (DeepSpeed's universal format; the global batch of 8 held by 2 accumulation steps)
and finishes the run: 2 hosts -> 1, with no relaunch of the lost node.

The steps between the checkpoint and the kill run twice, on 2 ranks before and on 1 rank after: the
first run of them is the reference. One rank accumulating two micro-batches trains exactly what two ranks do
(tests/trainer/e2e/test_accumulation.py), and the universal conversion copies the fp32 weights and Adam
moments, so the replayed steps' losses must equal the first ones bit for bit.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.trainer.e2e.conftest import demo_corpus  # noqa: F401 (the corpus fixture, 96 rows)
from tests.trainer.multinode.hosts import Cluster, wait

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[3]
STEPS, CHECKPOINT_AT = 8, 3
PORT = 29400
RDZV_CONF = "last_call_timeout=20,keep_alive_interval=1,keep_alive_max_attempt=3,join_timeout=120"
"""last_call: how long a round waits for more nodes once one is there (both start together: they meet
in the first round; the restart round completes alone after it). keep-alive 1 s x 3: the dead node
leaves the rendezvous 3 s after its last heartbeat (torch's default is 15 s)."""


def elastic_torchrun(cluster: Cluster, node: int, args: list[str]) -> list[str]:
    host = cluster.hosts[node]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1:2", "--nproc_per_node", "1",
        "--max-restarts", "1", "--monitor-interval", "0.5", "--rdzv_backend", "c10d", "--rdzv_id", "tcl-elastic",
        "--rdzv_endpoint", f"{cluster.hosts[0].address}:{PORT}", "--local-addr", host.address,
        "--rdzv_conf", f"is_host={int(node == 0)},{RDZV_CONF}", str(REPO / "trainer" / "main.py"), *args,
    ]


def train_records_all(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def wait_until(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_elastic_to_one_node(make_cluster, demo_corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    """torchrun restarts on the node left and the run continues there."""
    cluster = make_cluster(2)
    node0, node1 = cluster.hosts
    out, log0 = tmp_path / "run", tmp_path / "node0.log"
    args = [
        "--config", "tiny", f"output_dir={out}", f"data.train={demo_corpus / 'train'}", "data.eval=null",
        "data.batch_size=4", "data.num_workers=0", "model.queue_size=12", "engine.precision=fp32",
        f"optim.max_steps={STEPS}", "optim.warmup_steps=2", f"checkpoint.every_steps={CHECKPOINT_AT}",
        "checkpoint.keep_last=3", "log.every_steps=1", "log.progress_bar=false", "engine.collective_timeout_s=60",
        "--resume", "auto",
    ]  # no data.global_batch_size: the resume holds the checkpoint's 2 x 4. No loader workers: their
    # AF_UNIX sockets live under the host's TMPDIR, deep in tmp_path, and bind() refuses paths past 107 bytes.
    survivor = node0.popen(elastic_torchrun(cluster, 0, args), log0)
    node1.popen(elastic_torchrun(cluster, 1, args), tmp_path / "node1.log")

    pointer = out / "checkpoints" / "latest"
    wait_until(lambda: pointer.is_file() and pointer.read_text().strip() == f"step_{CHECKPOINT_AT:08d}"
               and len(train_records_all(out)) > CHECKPOINT_AT, 300, "a checkpoint, then one more step", log0)
    node1.kill()  # its torchrun agent and its rank: the node is gone for good
    # the steps node 0 logged on 2 ranks (the resume drops those past the checkpoint from metrics.jsonl;
    # torchrun's restart round waits last_call_timeout first, so this read comes well before)
    two_ranks = {r["step"]: r for r in train_records_all(out)}
    assert wait(survivor, 400) == 0, log0.read_text()[-4000:]

    log = log0.read_text()
    assert "global batch 8 = 4 per micro-batch x 2 ranks x 1 accumulation steps" in log
    assert "(exitcode: 75)" in log  # torchrun saw the first worker end with ExitCode.PEER_LOST, and restarted it
    assert f"elastic resume of step_{CHECKPOINT_AT:08d}: 2 -> 1 ranks, global batch 8 held" in log
    assert "global batch 8 = 4 per micro-batch x 1 ranks x 2 accumulation steps" in log
    assert f"resumed at step {CHECKPOINT_AT}" in log

    records = train_records_all(out)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # every step once, to the end
    replayed = [step for step in two_ranks if step > CHECKPOINT_AT]
    assert replayed, "no step ran between the checkpoint and the kill"
    for record in records:
        if record["step"] in two_ranks:  # up to the checkpoint: kept; after it: replayed on 1 rank
            first = two_ranks[record["step"]]
            assert record["losses"] == first["losses"], f"step {record['step']}"
            assert (record["lr"], record["temp"]) == (first["lr"], first["temp"]), f"step {record['step']}"
    final = torch.load(out / "checkpoints" / f"step_{STEPS:08d}" / "mp_rank_00_model_states.pt",
                       map_location="cpu", weights_only=False)
    assert (final["global_steps"], final["loader"]["sample_in_epoch"]) == (STEPS, STEPS * 8)
    assert (out / "checkpoints" / f"step_{CHECKPOINT_AT:08d}" / "universal").is_dir()
