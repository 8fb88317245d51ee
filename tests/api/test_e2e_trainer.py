"""The real trainer (trainer/main.py under the DeepSpeed launcher, 2 CPU ranks) launched through the API."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from api.launchers.local import default_script
from tests.api.conftest import ApiFactory, ApiServer, live_group_members, processes_started_with, wait_for
from trainer.control_plane import checkpoint_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TINY = ["optim.max_steps=6", "checkpoint.every_steps=3", "log.every_steps=1", "data.num_workers=0"]


@pytest.fixture
def real_api(api_factory: ApiFactory) -> ApiServer:
    from dataprep.synth import write_demo_corpus

    api = api_factory(local_runner="deepspeed", trainer_script=str(default_script()), cancel_grace_seconds="60")
    write_demo_corpus(api.root / "data" / "demo", n_train=64, n_eval=16, seed=0, size=64)
    return api


def post(api: ApiServer, overrides: list[str]) -> dict[str, Any]:
    body = {"config": {"preset": "tiny", "overrides": [
        *overrides, "data.train=data/demo/train", "data.eval=data/demo/eval"]}, "resources": {"procs_per_node": 2}}
    with api.client() as client:
        response = client.post("/v1/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_tiny_run_succeeds_with_verified_checkpoints(real_api: ApiServer) -> None:
    run = post(real_api, TINY)
    real_api.wait_state(run["id"], {"RUNNING"}, timeout=600)
    run = real_api.wait_state(run["id"], {"SUCCEEDED", "FAILED"}, timeout=600)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert run["progress"]["step"] == 6 and run["progress"]["total_steps"] == 6
    with real_api.client() as client:
        checkpoints = client.get(f"/v1/runs/{run['id']}/checkpoints").json()["items"]
    assert [c["step"] for c in checkpoints] == [3, 6]
    latest = Path(urlparse(checkpoints[-1]["uri"]).path)
    assert latest.is_relative_to(run["output_dir"])
    assert (checkpoints[-1]["digest"], checkpoints[-1]["size_bytes"]) == checkpoint_digest(latest)


def test_a_run_survives_an_api_restart_and_cancels_without_leftovers(real_api: ApiServer) -> None:
    run = post(real_api, ["optim.max_steps=100000", "log.every_steps=1", "data.num_workers=0"])
    real_api.wait_state(run["id"], {"RUNNING"}, timeout=600)
    real_api.stop(signal.SIGKILL)
    real_api.start()
    step = real_api.wait_state(run["id"], {"RUNNING"})["progress"]["step"]
    wait_for(lambda: real_api.wait_state(run["id"], {"RUNNING"})["progress"]["step"] > step, 120,
             "heartbeats to reach the restarted API")
    config = str(Path(run["output_dir"]).parent / "config.yaml")
    pgids = set(processes_started_with(config).values())
    assert len(pgids) == 1  # the recorder, the deepspeed launchers and both ranks share one group
    with real_api.client() as client:
        assert client.post(f"/v1/runs/{run['id']}/cancel").json()["state"] == "CANCELLING"
    real_api.wait_state(run["id"], {"CANCELLED"}, timeout=120)
    for pgid in pgids:
        assert not live_group_members(pgid)
