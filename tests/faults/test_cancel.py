"""A cancel through the REST API that really checkpoints: the real trainer (trainer/main.py, 2 CPU ranks
under the DeepSpeed launcher, a DataLoader worker per rank) cancelled mid-epoch ends CANCELLED with a
complete, registered checkpoint of the step it stopped at, and `--resume auto` continues from it.

Before: the API signalled the whole process group, the DataLoader workers died with it ("DataLoader worker
(pid ...) is killed by signal: Terminated"), the ranks crashed and no checkpoint was written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from api.launchers.local import default_script, free_port
from tests.api.conftest import ApiFactory, ApiServer, wait_for
from trainer.control_plane import checkpoint_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TRAIN_SAMPLES, BATCH, RANKS = 256, 8, 2
STEPS_PER_EPOCH = TRAIN_SAMPLES // (BATCH * RANKS)


@pytest.fixture
def real_api(api_factory: ApiFactory) -> ApiServer:
    from dataprep.synth import write_demo_corpus

    api = api_factory(local_runner="deepspeed", trainer_script=str(default_script()), cancel_grace_seconds="120")
    write_demo_corpus(api.root / "data" / "demo", n_train=TRAIN_SAMPLES, n_eval=16, seed=0, size=64)
    return api


def test_a_cancelled_run_checkpoints_and_resumes_from_there(real_api: ApiServer) -> None:
    api = real_api
    body = {"config": {"preset": "tiny", "overrides": [
        "optim.max_steps=100000", "checkpoint.every_steps=100000", "log.every_steps=1", f"data.batch_size={BATCH}",
        "data.num_workers=1", "data.train=data/demo/train", "data.eval=null"]}, "resources": {"procs_per_node": RANKS}}
    with api.client() as client:
        run = client.post("/v1/runs", json=body).json()
        wait_for(lambda: (client.get(f"/v1/runs/{run['id']}").json()["progress"]["step"] or 0) >= 3, 300,
                 "the run to train a few steps", interval=0.3)
        assert client.post(f"/v1/runs/{run['id']}/cancel").json()["state"] == "CANCELLING"
        ended = api.wait_state(run["id"], {"CANCELLED"}, timeout=150)
        checkpoints = client.get(f"/v1/runs/{run['id']}/checkpoints").json()["items"]
    log = (Path(run["output_dir"]).parent / "train.log").read_text()
    assert "killed by signal" not in log and "Traceback" not in log, log[-3000:]

    # The stop step's checkpoint, registered complete, mid-epoch (no scheduled checkpoint before it).
    assert len(checkpoints) == 1, checkpoints
    [checkpoint] = checkpoints
    stopped_at = checkpoint["step"]
    assert stopped_at >= ended["progress"]["step"] >= 3 and stopped_at % STEPS_PER_EPOCH != 0
    path = Path(unquote(urlparse(checkpoint["uri"]).path))
    assert (checkpoint["digest"], checkpoint["size_bytes"]) == checkpoint_digest(path)

    # The trainer alone (no API), on the run's own config: it continues from the cancel's checkpoint.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCL_")} | {"OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(RANKS), "--master_port", str(free_port()),
         str(default_script()), "--config", str(Path(run["output_dir"]).parent / "config.yaml"), "--resume", "auto",
         f"optim.max_steps={stopped_at + 1}"],
        cwd=api.root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"resumed at step {stopped_at}" in resumed.stdout + resumed.stderr
