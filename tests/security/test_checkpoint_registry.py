"""The checkpoint registry tells the truth (on a real PostgreSQL): it accepts checkpoints only under the
run's own output location, checks their digests itself, tells the trainer what pruning must keep (the best
and the pinned), forgets nothing the trainer reports deleted, pages its lists, and refuses run names its
column cannot hold."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import ApiServer, start_run, trainer_pids, wait_for
from trainer.control_plane import checkpoint_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def api(pg_api: ApiServer) -> ApiServer:
    return pg_api


@pytest.fixture(scope="module")
def held_run(api: ApiServer) -> Iterator[dict[str, Any]]:
    """A RUNNING run (the stand-in trainer waits before its first step) that the tests register checkpoints for."""
    release = api.root / "release"
    run = start_run(api, api.make_dataset("held", hold_until=str(release), hold_at_step=1), steps=1)
    wait_for(lambda: trainer_pids(run), 30, "the trainer to start")
    yield run
    release.touch()


def write_checkpoint(run: dict[str, Any], name: str) -> Path:
    path = Path(run["output_dir"]) / "checkpoints" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.pt").write_bytes(os.urandom(512))
    (path / "client_state.json").write_text(json.dumps({"name": name}))
    return path


def register(api: ApiServer, run: dict[str, Any], uri: str, step: int, digest: str = "d" * 64, size: int = 1) -> Any:
    with api.client() as client:
        return client.post(f"/v1/runs/{run['id']}/checkpoints",
                           json={"uri": uri, "step": step, "size_bytes": size, "digest": digest})


def register_files(api: ApiServer, run: dict[str, Any], path: Path, step: int) -> dict[str, Any]:
    digest, size = checkpoint_digest(path)
    response = register(api, run, path.as_uri(), step, digest, size)
    assert response.status_code == 201, response.text
    return response.json()


def test_only_checkpoints_under_the_runs_output_are_accepted(api: ApiServer, held_run: dict[str, Any]) -> None:
    out = held_run["output_dir"]
    other_run = Path(out).parent.parent / ("f" * 32) / "output" / "checkpoints" / "step_000001"
    for uri in ("file:///etc/passwd", other_run.as_uri(), f"file://{out}/../../{'f' * 32}/output/x",
                f"file://{out}", f"file://{out}2/x", "s3://bucket/runs/x", "http://example.com/x"):
        refused = register(api, held_run, uri, 1)
        assert refused.status_code == 422 and "not under the run's output location" in refused.text, uri
    with api.client() as client:
        assert client.get(f"/v1/runs/{held_run['id']}/checkpoints").json()["total"] == 0


def test_digests_are_verified_by_the_api(api: ApiServer, held_run: dict[str, Any]) -> None:
    honest = register_files(api, held_run, write_checkpoint(held_run, "honest"), 10)
    lying = register(api, held_run, write_checkpoint(held_run, "lying").as_uri(), 11, "0" * 64, 1).json()
    absent = register(api, held_run, f"file://{held_run['output_dir']}/checkpoints/absent", 12).json()
    assert {honest["verification"], lying["verification"], absent["verification"]} == {"pending"}

    def verified() -> dict[str, str] | None:
        with api.client() as client:
            found = {c["id"]: c["verification"] for c in
                     client.get(f"/v1/runs/{held_run['id']}/checkpoints").json()["items"]}
        return found if "pending" not in found.values() else None

    results = wait_for(verified, 30, "the background verification")
    assert (results[honest["id"]], results[lying["id"]], results[absent["id"]]) == ("verified", "mismatch", "missing")


def test_pruning_keeps_the_best_and_the_pinned_and_deletions_are_recorded(
        api: ApiServer, held_run: dict[str, Any]) -> None:
    made = {step: register_files(api, held_run, write_checkpoint(held_run, f"k{step}"), step)
            for step in (20, 21, 22, 23)}
    run_id = held_run["id"]
    with api.client() as client:
        assert client.post(f"/v1/runs/{run_id}/checkpoints/{made[20]['id']}/pin").json()["pinned"] is True
        assert client.post(f"/v1/checkpoints/{made[21]['id']}/best").status_code == 200
        kept = client.get(f"/v1/runs/{run_id}/checkpoints/kept").json()["uris"]
        assert kept == sorted([made[20]["uri"], made[21]["uri"]])

        # The trainer prunes what is not kept and says so: the registry stops offering those.
        gone = [made[22]["uri"], made[23]["uri"], "file:///never/registered"]
        assert client.post(f"/v1/runs/{run_id}/checkpoints/deleted", json={"uris": gone}).json()["uris"] == sorted(
            gone[:2])
        listed = {c["step"] for c in client.get(f"/v1/runs/{run_id}/checkpoints?limit=500").json()["items"]}
        assert {20, 21} <= listed and not {22, 23} & listed
        everything = client.get(f"/v1/runs/{run_id}/checkpoints?include_deleted=true&limit=500").json()["items"]
        assert {c["step"]: c["deleted_at"] is not None for c in everything if c["step"] >= 20} == {
            20: False, 21: False, 22: True, 23: True}
        assert client.get(f"/v1/runs/{run_id}").json()["latest_checkpoint"]["step"] == 21
        assert client.post(f"/v1/runs/{run_id}/checkpoints/{made[23]['id']}/pin").status_code == 409
        assert client.post(f"/v1/checkpoints/{made[23]['id']}/best").status_code == 409
        unpinned = client.delete(f"/v1/runs/{run_id}/checkpoints/{made[20]['id']}/pin").json()
        assert unpinned["pinned"] is False
        assert client.get(f"/v1/runs/{run_id}/checkpoints/kept").json()["uris"] == [made[21]["uri"]]
        other = start_run(api, api.make_dataset("other"), steps=1)
        assert client.post(f"/v1/runs/{other['id']}/checkpoints/{made[20]['id']}/pin").status_code == 404


def test_checkpoint_lists_are_paged(api: ApiServer, held_run: dict[str, Any]) -> None:
    for step in range(30, 35):
        register_files(api, held_run, write_checkpoint(held_run, f"p{step}"), step)
    with api.client() as client:
        whole = client.get(f"/v1/runs/{held_run['id']}/checkpoints?limit=500").json()
        pages = [client.get(f"/v1/runs/{held_run['id']}/checkpoints?limit=2&offset={o}").json()
                 for o in range(0, whole["total"], 2)]
        assert client.get(f"/v1/runs/{held_run['id']}/checkpoints?limit=501").status_code == 422
    assert [c["id"] for page in pages for c in page["items"]] == [c["id"] for c in whole["items"]]
    assert all(page["total"] == whole["total"] and len(page["items"]) <= 2 for page in pages)


def test_a_run_name_longer_than_its_column_is_refused(api: ApiServer) -> None:
    with api.client() as client:
        refused = client.post("/v1/runs", json={"config": {"preset": "tiny", "overrides": [
            f"name={'n' * 256}", f"data.train={api.make_dataset('named')}", "data.eval=null"]}})
        assert refused.status_code == 422 and "at most 255" in refused.text
        fits = client.post("/v1/runs", json={"config": {"preset": "tiny", "overrides": [
            f"name={'n' * 255}", f"data.train={api.make_dataset('named')}", "data.eval=null", "optim.max_steps=1"]}})
        assert fits.status_code == 201, fits.text
