"""s3:// output from two namespace hosts: a real S3 server (moto) on the hub's address, which both hosts
reach over their veth; each host stages in its own folder, uploads its own rank's files, and a resume on
empty staging folders downloads what each rank needs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.s3_server import S3Server
from tests.trainer.multinode.hosts import HUB_ADDRESS, Cluster
from tests.trainer.multinode.test_storage_node_local import run_workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MOTO_PORT = 5090
CLIENT = "import boto3, os, sys; c = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT_URL']); "


def _moto_on_hub(cluster: Cluster, log: Path) -> S3Server:
    """moto_server listening on the hub's veth address only; returns once a host can create a bucket."""
    server = S3Server(endpoint_url=f"http://{HUB_ADDRESS}:{MOTO_PORT}")
    moto = Path(sys.executable).with_name("moto_server")
    cluster.hub.popen([str(moto), "-H", HUB_ADDRESS, "-p", str(MOTO_PORT)], log,
                      env={"MOTO_ALLOW_NONEXISTENT_REGION": "true"})
    create = [sys.executable, "-c", CLIENT + "import time\n"
              "for _ in range(150):\n"
              "    try: c.create_bucket(Bucket='ckpt'); break\n"
              "    except Exception: time.sleep(0.2)\n"
              "else: sys.exit(1)"]
    cluster.hosts[0].exec(create, timeout=60, env=server.env)
    return server


def _keys(cluster: Cluster, server: S3Server) -> set[str]:
    list_keys = CLIENT + "print('\\n'.join(o['Key'] for o in c.list_objects_v2(Bucket='ckpt').get('Contents', [])))"
    return set(cluster.hosts[1].exec([sys.executable, "-c", list_keys], timeout=30, env=server.env).stdout.split())


def test_s3_output_from_two_hosts(cluster: Cluster, tmp_path: Path) -> None:
    server = _moto_on_hub(cluster, tmp_path / "moto.log")
    out = "s3://ckpt/run"
    first = run_workers(cluster, tmp_path, "first", out, "--steps", "2", "--save", "1,2", "checkpoint.keep_last=1",
                        env=server.env)
    keys = _keys(cluster, server)
    assert {"run/checkpoints/latest", "run/checkpoints/step_00000002/rank_0.json",
            "run/checkpoints/step_00000002/rank_1.json", "run/checkpoints/step_00000002/mp_rank_00_model_states.pt",
            "run/checkpoints/step_00000002/zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= keys
    assert not any("step_00000001" in k for k in keys)  # keep_last=1 pruned it in the bucket
    staging = [Path(host.tmpdir) / "tcl-staging" for host in cluster.hosts]
    assert all(s.is_dir() for s in staging)  # each host staged in its own TMPDIR

    for folder in staging:  # new machines: nothing local
        shutil.rmtree(folder)
    resumed = run_workers(cluster, tmp_path, "resumed", out, "--steps", "2", "--resume", "auto", env=server.env)
    assert [r["resumed"] for r in resumed] == ["step_00000002", "step_00000002"]
    assert [r["weights"] for r in resumed] == [first[0]["weights"]] * 2
    node1 = {p.name for p in staging[1].rglob("*") if p.is_file()}
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" not in node1  # rank 1 fetched only its own partition
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt" in node1
