"""Checkpoints on node-local disks, on two namespace hosts: each host mounts its own tmpfs at the same
path, so output_dir names a different disk on each, as on machines without a shared filesystem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.trainer.multinode.hosts import Cluster, wait

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[3]
PORT = 29510


def run_workers(cluster: Cluster, tmp_path: Path, name: str, output_dir: str, *args: str,
                env: dict[str, str] | None = None, expect: int = 0) -> list[dict]:
    """The checkpoint worker (tests/trainer/checkpoint/worker.py) as 2 nodes x 1 rank under torchrun
    (whose exit status is 1 when a rank fails); every rank's answer."""
    answers = tmp_path / f"answers-{name}"
    answers.mkdir()
    procs = [
        host.popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                    "--node_rank", str(i), "--master_addr", cluster.hosts[0].address, "--master_port", str(PORT),
                    "-m", "tests.trainer.checkpoint.worker", output_dir, "--answers", str(answers), *args],
                   tmp_path / f"{name}-node{i}.log", env=env, cwd=REPO)
        for i, host in enumerate(cluster.hosts)
    ]
    codes = [wait(proc, 300) for proc in procs]
    logs = "".join((tmp_path / f"{name}-node{i}.log").read_text()[-2000:] for i in range(2))
    assert codes == [expect, expect], logs
    return [json.loads((answers / f"rank{r}.json").read_text()) for r in range(2)]


def _files(host, folder: Path) -> set[str]:
    """What `folder` holds as `host` sees it (its private disk is mounted only in its namespace)."""
    out = host.exec(["find", str(folder), "-type", "f", "-printf", "%P\\n"]).stdout
    return set(out.split())


def test_node_local_disks(cluster: Cluster, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    for host in cluster.hosts:
        host.exec(["mount", "-t", "tmpfs", "-o", "size=64m", f"tcl-disk-{host.name}", str(disk)])
    out = str(disk / "run")

    # output_dir is not shared: refused at start-up, by every rank with the same message
    refused = run_workers(cluster, tmp_path, "refused", out, "--steps", "1", "--save", "1", expect=1)
    assert refused[0] == refused[1] and "is not shared by every node: rank 1 on node1" in refused[0]["error"]

    node_local = "checkpoint.storage=node_local"
    first = run_workers(cluster, tmp_path, "first", out, "--steps", "2", "--save", "1,2", node_local)
    node0, node1 = (_files(h, disk / "run" / "checkpoints") for h in cluster.hosts)
    for files, rank in ((node0, 0), (node1, 1)):  # each node holds its own rank's part, and the model states
        assert {"latest", f"step_00000002/rank_{rank}.json", f"step_00000002/rng_rank{rank}.pt",
                f"step_00000002/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
                "step_00000002/mp_rank_00_model_states.pt"} <= files
        assert f"step_00000002/rank_{1 - rank}.json" not in files

    # node 1 lost its part of step 2 (it died mid-save): both nodes agree on step 1, and continue exactly
    cluster.hosts[1].exec(["rm", str(disk / "run" / "checkpoints" / "step_00000002" / "rank_1.json")])
    resumed = run_workers(cluster, tmp_path, "resumed", out, "--steps", "2", "--resume", "auto", node_local)
    assert [r["resumed"] for r in resumed] == ["step_00000001", "step_00000001"]
    assert [r["weights"] for r in resumed] == [first[0]["weights"]] * 2
