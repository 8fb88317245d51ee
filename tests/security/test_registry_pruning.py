"""keep_last pruning keeps what the registry keeps: a real API on PostgreSQL, a pinned checkpoint, and the real
Checkpointer (one-process DeepSpeed ZeRO-2, the checkpoint tests' worker) asking the API through the trainer's
control-plane client. The pinned checkpoint survives a keep_last of 1, the pruned one is reported and no longer
offered; a registry that does not answer means nothing is pruned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import (
    OPERATOR_TOKEN,
    ApiServer,
    free_port,
    start_run,
    trainer_pids,
    wait_for,
)
from tests.trainer.checkpoint.conftest import run_worker
from trainer.control_plane import ControlPlane, checkpoint_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def api(pg_api: ApiServer) -> ApiServer:
    return pg_api


@pytest.fixture
def held_run(api: ApiServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A RUNNING run whose output folder the worker saves into (the stand-in trainer waits at step 1)."""
    release = tmp_path / "release"
    run = start_run(api, api.make_dataset(f"held-{tmp_path.name}", hold_until=str(release), hold_at_step=1), steps=1)
    wait_for(lambda: trainer_pids(run), 30, "the trainer to start")
    yield run
    release.touch()


def registry_env(url: str, run: dict[str, Any]) -> dict[str, str]:
    # The operator token is accepted wherever the run's own token is (the run's is in the trainer's environment).
    return {"TCL_API_URL": url, "TCL_RUN_ID": run["id"], "TCL_RUN_TOKEN": OPERATOR_TOKEN}


def register(api: ApiServer, run: dict[str, Any], uri: str, step: int) -> dict[str, Any]:
    digest, size = checkpoint_digest(Path(uri.removeprefix("file://")))
    with api.client() as client:
        response = client.post(f"/v1/runs/{run['id']}/checkpoints",
                               json={"uri": uri, "step": step, "size_bytes": size, "digest": digest})
    assert response.status_code == 201, response.text
    return response.json()


def tags_on_disk(run: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in (Path(run["output_dir"]) / "checkpoints").glob("step_*"))


def test_pruning_keeps_the_pinned_checkpoint_and_reports_what_it_deleted(
    api: ApiServer, held_run: dict[str, Any], tmp_path: Path
) -> None:
    out, run = held_run["output_dir"], held_run
    first = run_worker(tmp_path / "a1", out, "--save", "1,2", "--steps", "2", "checkpoint.keep_last=2")[0]
    one, two = (register(api, run, uri, step) for uri, step in zip(first["saved"], (1, 2), strict=True))
    with api.client() as client:
        assert client.post(f"/v1/runs/{run['id']}/checkpoints/{one['id']}/pin").status_code == 200

    env = registry_env(api.url, run)
    run_worker(tmp_path / "a2", out, "--resume", "auto", "--save", "3", "--steps", "3", "checkpoint.keep_last=1",
               env=env)
    assert tags_on_disk(run) == ["step_00000001", "step_00000003"]  # 2 pruned; 1 pinned outlives keep_last=1
    with api.client() as client:
        listed = client.get(f"/v1/runs/{run['id']}/checkpoints", params={"include_deleted": True}).json()
        available = client.get(f"/v1/runs/{run['id']}/checkpoints").json()
    deleted = {c["uri"]: c.get("deleted_at") for c in listed["items"]}
    assert deleted[two["uri"]] is not None and deleted[one["uri"]] is None
    assert [c["uri"] for c in available["items"]] == [one["uri"]]


def test_a_registry_that_does_not_answer_prunes_nothing(held_run: dict[str, Any], tmp_path: Path) -> None:
    out, run = held_run["output_dir"], held_run
    dead = f"http://127.0.0.1:{free_port()}"
    assert ControlPlane(dead, run["id"], OPERATOR_TOKEN, timeout=1, retry_delay=0).kept_checkpoints() is None
    run_worker(tmp_path / "b", out, "--save", "1,2", "--steps", "2", "checkpoint.keep_last=1",
               env=registry_env(dead, run))
    assert tags_on_disk(run) == ["step_00000001", "step_00000002"]
