"""Where a run is tracked reaches GET /v1/runs/{id}: the trainer's ControlPlane sends it once with a heartbeat
to a real API server (the stand-in trainer holds the run RUNNING meanwhile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import ApiServer, _kill_leftover_runs, start_run, trainer_pids
from trainer.control_plane import ControlPlane


def _run_token(run: dict) -> str:
    pid = next(iter(trainer_pids(run)))
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    return environ["TCL_RUN_TOKEN"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_tracking_location_reaches_the_run_record(tmp_path: Path) -> None:
    api = ApiServer(tmp_path).start()
    try:
        run = start_run(api, api.make_dataset("tracked", stall_at_step=1), steps=500)
        api.wait_state(run["id"], {"RUNNING"})
        assert run["tracking"] == {}
        client = ControlPlane(api.url, run["id"], _run_token(run))
        where = {"mlflow": "http://127.0.0.1:5000/#/experiments/1/runs/" + "ab" * 16, "tensorboard": "/runs/x/tb"}
        client.report_tracking({**where, "wandb": "x" * 5000})  # an over-long location is cut, not refused
        client.heartbeat(7, 500, 0.1, 10.0, {"loss": 1.0})
        with api.client() as operator:
            shown = operator.get(f"/v1/runs/{run['id']}").json()
            assert shown["progress"]["step"] == 7
            assert shown["tracking"] == {**where, "wandb": "x" * 2048}
            client.heartbeat(8, 500, 0.1, 10.0, {"loss": 0.9})  # sent once; the API keeps it
            shown = operator.get(f"/v1/runs/{run['id']}").json()
            assert shown["progress"]["step"] == 8 and shown["tracking"]["tensorboard"] == "/runs/x/tb"
            operator.post(f"/v1/runs/{run['id']}/cancel")
        api.wait_state(run["id"], {"CANCELLED"})
    finally:
        api.stop()
        _kill_leftover_runs(api.root / "runs")
