"""Runs through the real API (uvicorn on loopback) and the local launcher, with the stand-in trainer."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.api.conftest import (
    OPERATOR_TOKEN,
    ApiFactory,
    ApiServer,
    live_group_members,
    start_run,
    trainer_pids,
    wait_for,
)
from trainer.control_plane import checkpoint_digest


def run_token(run: dict[str, Any]) -> str:
    """The run token, read from the stand-in trainer's environment (as root or as the same user)."""
    pid = next(iter(trainer_pids(run)))
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    assert "TCL_API_TOKEN" not in environ  # the operator token never reaches a trainer
    return environ["TCL_RUN_TOKEN"]


def test_a_run_goes_from_pending_through_running_to_succeeded(api: ApiServer) -> None:
    created = start_run(api, api.make_dataset("ok", step_seconds=0.25), steps=8)
    assert created["state"] == "PENDING" and created["attempt"] == 0
    assert created["output_dir"] == str(api.root / "runs" / created["id"] / "output")
    assert created["config"]["data"]["train"] == str(api.root / "data" / "ok")
    seen: list[str] = []

    def finished() -> dict[str, Any] | None:
        with api.client() as client:
            run = client.get(f"/v1/runs/{created['id']}").json()
        if not seen or seen[-1] != run["state"]:
            seen.append(run["state"])
        return run if run["state"] in ("SUCCEEDED", "FAILED") else None

    run = wait_for(finished, 60, "the run to end", interval=0.05)
    assert run["state"] == "SUCCEEDED" and run["reason"] is None, api.log_path.read_text()[-2000:]
    assert "RUNNING" in seen and seen[-1] == "SUCCEEDED"
    assert [s for s in seen if s in ("PENDING", "STARTING", "RUNNING", "SUCCEEDED")] == seen  # never elsewhere
    assert run["attempt"] == 1 and run["started_at"] <= run["finished_at"]
    progress = run["progress"]
    assert (progress["step"], progress["total_steps"], progress["eta_seconds"]) == (8, 8, 0)
    assert progress["metrics"] == {"loss": 10 / 8, "itm": 1 / 8, "eval/r_mean": 8.0}
    assert progress["samples_per_sec"] == 108.0


def test_checkpoints_are_registered_with_digests_of_their_files(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("ckpt"), steps=8)
    api.wait_state(run["id"], {"SUCCEEDED"})
    with api.client() as client:
        items = client.get(f"/v1/runs/{run['id']}/checkpoints").json()["items"]
        assert [c["step"] for c in items] == [3, 6, 8]
        for item in items:
            path = Path(urlparse(item["uri"]).path)
            assert path.is_relative_to(run["output_dir"])
            assert (item["digest"], item["size_bytes"]) == checkpoint_digest(path)
        assert client.get(f"/v1/runs/{run['id']}").json()["latest_checkpoint"]["id"] == items[-1]["id"]
        best = client.post(f"/v1/checkpoints/{items[1]['id']}/best").json()
        assert best["is_best"] and best["step"] == 6
        assert client.get(f"/v1/checkpoints/{items[2]['id']}").json()["is_best"] is False
        assert client.get(f"/v1/runs/{run['id']}").json()["best_checkpoint_id"] == items[1]["id"]
        assert client.get(f"/v1/checkpoints/{'0' * 32}").status_code == 404


def test_a_failed_run_keeps_its_reason(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("fails", fail_at_step=2, exit_code=3), steps=8)
    run = api.wait_state(run["id"], {"FAILED", "SUCCEEDED"})
    assert run["state"] == "FAILED"
    assert run["reason"] == "attempt 1 failed: exit status 3; last log line: step 2: failing on purpose"


def test_a_failed_attempt_is_relaunched_while_attempts_remain(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("flaky", fail_attempts=1, exit_code=7), steps=4, max_attempts=2)
    run = api.wait_state(run["id"], {"FAILED", "SUCCEEDED"})
    assert (run["state"], run["attempt"]) == ("SUCCEEDED", 2)
    assert run["reason"].startswith("attempt 1 failed: exit status 7")
    with api.client() as client:
        log = client.get(f"/v1/runs/{run['id']}/logs", params={"tail": 1000}).text
    assert log.count("=== attempt") == 2 and "attempt 1 fails on purpose" in log
    second = log.split("=== attempt 2: ")[1].splitlines()[0]
    assert second.endswith("--resume auto")  # the relaunch continues from the latest checkpoint


def test_cancel_stops_the_trainer_gracefully(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("long", step_seconds=0.2), steps=500)
    api.wait_state(run["id"], {"RUNNING"})
    token = run_token(run)
    with api.client() as client:
        cancelled = client.post(f"/v1/runs/{run['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLING"
        run = api.wait_state(run["id"], {"CANCELLED"})
        assert run["reason"] == "cancelled by request"
        assert "SIGTERM: stopping" in client.get(f"/v1/runs/{run['id']}/logs").text
        assert client.post(f"/v1/runs/{run['id']}/cancel").status_code == 409
        trainer = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"})
        assert trainer.post(f"/v1/runs/{run['id']}/heartbeat", json={"step": 1}).status_code == 409
    for pgid in trainer_pids(run).values():
        assert not live_group_members(pgid)


def test_heartbeats_take_the_run_token_only(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("beats", stall_at_step=1), steps=500)
    api.wait_state(run["id"], {"RUNNING"})
    token = run_token(run)
    url = f"/v1/runs/{run['id']}/heartbeat"
    with api.client(token) as trainer, api.client() as operator:
        reply = trainer.post(url, json={"step": 12345, "total_steps": 500, "metrics": {"loss": 0.5}})
        assert reply.json() == {"state": "RUNNING", "cancel_requested": False}
        assert operator.get(f"/v1/runs/{run['id']}").json()["progress"]["step"] == 12345
        assert operator.post(url, json={"step": 1}).status_code == 401  # the operator is not the run
        other = start_run(api, api.make_dataset("beats"), steps=1)
        assert trainer.post(f"/v1/runs/{other['id']}/heartbeat", json={"step": 1}).status_code == 401
        operator.post(f"/v1/runs/{run['id']}/cancel")
        assert trainer.post(url, json={"step": 1}).json()["cancel_requested"] is True
    api.wait_state(run["id"], {"CANCELLED"})


def test_logs_tail_and_follow(api: ApiServer) -> None:
    release = api.root / "release-logs"
    run = start_run(api, api.make_dataset("logs", step_seconds=0.05, hold_until=str(release), hold_at_step=6), steps=10)
    wait_for(lambda: api.wait_state(run["id"], {"RUNNING"})["progress"]["step"] == 5, 30, "step 5")
    with api.client() as client:
        with client.stream("GET", f"/v1/runs/{run['id']}/logs", params={"follow": True, "tail": 0}) as stream:
            release.touch()
            text = "".join(stream.iter_text())  # ends when the run has ended and all is sent
        assert text.startswith("step 6/10\n")  # tail 0: only what came after the request
        lines = [line for line in text.splitlines() if line.startswith("step ")]
        assert lines == [f"step {i}/10" for i in range(6, 11)] and text.rstrip().endswith("training done")
        with client.stream("GET", f"/v1/runs/{run['id']}/logs", params={"follow": True, "tail": 3}) as stream:
            assert "".join(stream.iter_text()) == "step 9/10\nstep 10/10\ntraining done\n"  # ended: the tail only
        assert client.get(f"/v1/runs/{run['id']}").json()["state"] == "SUCCEEDED"
        tail = client.get(f"/v1/runs/{run['id']}/logs", params={"tail": 2}).text
        assert tail == "step 10/10\ntraining done\n"


def test_listing_filters_by_state_and_pages(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("listed"), steps=1)
    api.wait_state(run["id"], {"SUCCEEDED"})
    with api.client() as client:
        succeeded = client.get("/v1/runs", params={"state": "SUCCEEDED", "limit": 200}).json()
        assert run["id"] in [r["id"] for r in succeeded["items"]]
        assert all(r["state"] == "SUCCEEDED" for r in succeeded["items"])
        page = client.get("/v1/runs", params={"limit": 1, "offset": 1}).json()
        assert len(page["items"]) == 1 and page["total"] >= 2 and (page["limit"], page["offset"]) == (1, 1)
        assert client.get("/v1/runs", params={"state": "BOGUS"}).status_code == 422


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"config": {"optim": {"lrr": 1}}}, 422, "optim.lrr: unknown key"),
    ({"config": {"preset": "nope"}}, 422, "no such preset"),
    ({"config": {"data": {"train": "/etc"}}}, 422, "outside the allowed roots"),
    ({"config": {"preset": "tiny"}, "launcher": "kubernetes"}, 422, "not enabled here"),
    ({"config": {"preset": "tiny"}, "resources": {"nodes": 2}}, 422, "one node"),
    ({"config": {"preset": "tiny"}, "max_attempts": 50}, 422, "exceeds this server's limit"),
    ({"config": {"preset": "tiny"}, "colour": "red"}, 422, "Extra inputs are not permitted"),
])
def test_bad_requests_are_refused_and_create_nothing(api: ApiServer, body: dict[str, Any], status: int,
                                                     message: str) -> None:
    with api.client() as client:
        before = client.get("/v1/runs").json()["total"]
        response = client.post("/v1/runs", json=body)
        assert response.status_code == status and message in response.text
        assert client.get("/v1/runs").json()["total"] == before


def test_request_bodies_over_the_limit_get_413(api: ApiServer) -> None:
    huge = {"config": {"preset": "tiny", "overrides": ["name=" + "x" * 1000] * 1100}}
    with api.client() as client:
        before = client.get("/v1/runs").json()["total"]
        assert client.post("/v1/runs", json=huge).status_code == 413
        chunks = (b"x" * 65536 for _ in range(20))  # no Content-Length: counted as it arrives
        assert client.post("/v1/runs", content=chunks, headers={"Content-Type": "application/json"}).status_code == 413
        assert client.get("/v1/runs").json()["total"] == before


def test_every_endpoint_but_health_needs_the_token(api: ApiServer) -> None:
    schema = httpx.get(f"{api.url}/openapi.json").json()
    some_id = "a" * 32
    clients = {token: api.client(token) for token in (None, "wrong-token")}
    for path, operations in schema["paths"].items():
        url = path.replace("{run_id}", some_id).replace("{checkpoint_id}", some_id)
        for method in operations:
            for token, client in clients.items():
                response = client.request(method, url, json={})
                if path in ("/healthz", "/readyz"):
                    assert response.status_code == 200
                    continue
                assert response.status_code == 401, f"{method} {path}"
                challenge = response.headers["WWW-Authenticate"]
                assert challenge.startswith("Bearer") and ("invalid_token" in challenge) == (token is not None)
    for client in clients.values():
        client.close()


def test_no_token_reaches_the_logs(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("secret", step_seconds=0.3), steps=200)
    api.wait_state(run["id"], {"RUNNING"})
    token = run_token(run)
    with api.client() as client:
        client.post(f"/v1/runs/{run['id']}/cancel")
    api.wait_state(run["id"], {"CANCELLED"})
    for log in (api.log_path, Path(run["output_dir"]).parent / "train.log"):
        text = log.read_text()
        assert OPERATOR_TOKEN not in text and token not in text


def test_runs_queue_beyond_the_limit_and_a_stubborn_trainer_is_killed(api_factory: ApiFactory) -> None:
    api = api_factory(max_active_runs="1", cancel_grace_seconds="0.5")
    stubborn = start_run(api, api.make_dataset("stubborn", stall_at_step=1, ignore_sigterm=True), steps=10)
    api.wait_state(stubborn["id"], {"RUNNING"})
    queued = start_run(api, api.make_dataset("queued"), steps=2)
    dropped = start_run(api, api.make_dataset("dropped"), steps=2)
    with api.client() as client:
        assert client.get(f"/v1/runs/{queued['id']}").json()["state"] == "PENDING"  # one run at a time
        cancelled = client.post(f"/v1/runs/{dropped['id']}/cancel").json()
        assert (cancelled["state"], cancelled["reason"]) == ("CANCELLED", "cancelled before launch")
        client.post(f"/v1/runs/{stubborn['id']}/cancel")
        stubborn = api.wait_state(stubborn["id"], {"CANCELLED"})
        assert "SIGTERM: ignored" in client.get(f"/v1/runs/{stubborn['id']}/logs").text  # then SIGKILL
    for pgid in trainer_pids(stubborn).values():
        assert not live_group_members(pgid)
    assert api.wait_state(queued["id"], {"SUCCEEDED"})["attempt"] == 1
    assert api.wait_state(dropped["id"], {"CANCELLED"})["attempt"] == 0  # never launched


@pytest.mark.slow
def test_a_cancelled_deepspeed_run_leaves_no_process_behind(api_factory: ApiFactory) -> None:
    api = api_factory(local_runner="deepspeed", cancel_grace_seconds="20")
    run = start_run(api, api.make_dataset("ds", step_seconds=0.2), steps=1000, resources={"procs_per_node": 2})
    api.wait_state(run["id"], {"RUNNING"}, timeout=120)
    pids = wait_for(lambda: len(trainer_pids(run)) == 2 and trainer_pids(run), 30, "both ranks")
    [pgid] = set(pids.values())
    assert set(pids) <= set(live_group_members(pgid))  # the ranks, the deepspeed launchers and the recorder
    with api.client() as client:
        client.post(f"/v1/runs/{run['id']}/cancel")
    api.wait_state(run["id"], {"CANCELLED"}, timeout=60)
    assert not live_group_members(pgid)
    assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
               for pid in pids)


def test_a_restarted_api_reconciles_its_runs(api_factory: ApiFactory) -> None:
    api = api_factory()
    release_going, release_failing = api.root / "release-going", api.root / "release-failing"
    going = start_run(api, api.make_dataset("going", step_seconds=0.05, hold_until=str(release_going)), steps=20)
    failing = start_run(api, api.make_dataset("failing", step_seconds=0.05, hold_until=str(release_failing),
                                              hold_at_step=2, fail_at_step=2, exit_code=9), steps=30)
    killed = start_run(api, api.make_dataset("killed", step_seconds=0.3), steps=300)
    for run in (going, failing, killed):
        api.wait_state(run["id"], {"RUNNING"})
    api.stop(signal.SIGKILL)  # a crash: nothing is cleaned up
    for pgid in set(trainer_pids(killed).values()):
        os.killpg(pgid, signal.SIGKILL)  # dies while nobody watches, without an exit status
    release_failing.touch()
    failing_exit = api.root / "runs" / failing["id"] / "exit-status.1"
    wait_for(failing_exit.exists, 30, "the failing run to end while the API is down")
    api.start()
    assert api.wait_state(failing["id"], {"FAILED"})["reason"].startswith("attempt 1 failed: exit status 9")
    assert "without recording an exit status" in api.wait_state(killed["id"], {"FAILED"})["reason"]
    assert api.wait_state(going["id"], {"RUNNING"})["progress"]["step"] < 20  # adopted, still going
    release_going.touch()
    assert api.wait_state(going["id"], {"SUCCEEDED"})["progress"]["step"] == 20  # its reports reach the new API
    assert api.log_path.read_text().count("Application startup complete") == 2
