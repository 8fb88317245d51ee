"""Faults of the control plane, reproduced for real: trainers that stop reporting, a Kubernetes API that
hangs, two API instances on one database, a heartbeat racing a relaunch, and a PostgreSQL connection
killed between a launch and the write of its handle."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from api.launchers.base import LaunchRequest
from api.launchers.local import LocalLauncher
from api.leader import AlwaysLeader
from api.schemas import Resources
from api.security import hash_token
from api.settings import Settings
from api.store import Store, make_engine, migrate
from api.supervisor import Supervisor
from tests.api.conftest import (
    FAKE_TRAINER,
    ApiFactory,
    ApiServer,
    empty_database,
    live_group_members,
    start_run,
    trainer_pids,
    wait_for,
)
from tests.api.fake_kubernetes import FakeKubernetes
from trainer.config import dump, load

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def run_token(pid: int) -> str:
    """TCL_RUN_TOKEN of a live trainer, read from its environment (we are root)."""
    env = dict(item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
    return env[b"TCL_RUN_TOKEN"].decode()


# ---------------------------------------------------------------- liveness


def test_a_run_whose_heartbeats_stop_is_killed_relaunched_and_failed(api_factory: ApiFactory) -> None:
    """The stand-in trainer hangs after step 2 (as a rank stuck in a collective would): each attempt is
    killed heartbeat_timeout_seconds after its last heartbeat; the second is the last one allowed."""
    api = api_factory(heartbeat_timeout_seconds="1.5")
    run = start_run(api, api.make_dataset("hangs", stall_at_step=2), steps=50, max_attempts=2)
    ended = api.wait_state(run["id"], TERMINAL, timeout=60)
    assert ended["state"] == "FAILED" and ended["attempt"] == 2, ended
    assert "attempt 2 sent no heartbeat" in ended["reason"] and "heartbeat_timeout_seconds=1.5" in ended["reason"]
    groups = set(trainer_pids(ended).values())
    assert len(groups) == 2  # one process group per attempt, both gone
    wait_for(lambda: not any(live_group_members(g) for g in groups), 10, "the killed attempts to be reaped")


def kube_api(api_factory: ApiFactory, fake: FakeKubernetes, tmp_path: Path, **settings: str) -> ApiServer:
    return api_factory(launchers='["local", "kubernetes"]', kube_config=str(fake.kubeconfig(tmp_path / "kc")),
                       kube_namespace="tcl", kube_flavor="pytorchjob", **settings)


def test_a_job_that_never_reports_is_deleted_after_the_starting_timeout(
        api_factory: ApiFactory, fake: FakeKubernetes, tmp_path: Path) -> None:
    """The fake cluster accepts the PyTorchJob and never runs it (a pod stuck Pending)."""
    api = kube_api(api_factory, fake, tmp_path, starting_timeout_seconds="1")
    run = start_run(api, "s3://bucket/train", steps=10, launcher="kubernetes")
    ended = api.wait_state(run["id"], TERMINAL, timeout=30)
    assert ended["state"] == "FAILED"
    assert "sent no first heartbeat" in ended["reason"] and "starting_timeout_seconds=1" in ended["reason"]
    deletes = [r for r in fake.requests if r.method == "DELETE" and r.path.endswith(f"tcl-{run['id']}-1")]
    assert deletes and deletes[0].option("gracePeriodSeconds") == "0"
    assert not fake.find("PyTorchJob")


def test_a_hung_kubernetes_api_neither_stalls_supervision_nor_goes_unreported(
        api_factory: ApiFactory, fake: FakeKubernetes, tmp_path: Path) -> None:
    bounded = kube_api(api_factory, fake, tmp_path, kube_request_timeout_seconds="0.5", supervisor_stale_seconds="2")
    unbounded = kube_api(api_factory, fake, tmp_path, kube_request_timeout_seconds="60", supervisor_stale_seconds="1")
    for api in (bounded, unbounded):
        start_run(api, "s3://bucket/train", steps=10, launcher="kubernetes")
    wait_for(lambda: len(fake.find("PyTorchJob")) == 2, 30, "both jobs to be submitted")
    fake.answer_after = 4.0  # from now on the cluster answers nothing for 4 s

    # With the request timeout the supervisor goes on: a local run submitted now is launched and finishes.
    local = start_run(bounded, bounded.make_dataset("quick"), steps=3)
    assert bounded.wait_state(local["id"], TERMINAL, timeout=30)["state"] == "SUCCEEDED"
    ready = httpx.get(f"{bounded.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["supervisor_tick_age_seconds"] < 2

    # Without a useful timeout the tick hangs in the status call, and /readyz says so.
    def stale() -> httpx.Response | None:
        response = httpx.get(f"{unbounded.url}/readyz", timeout=10)
        return response if response.status_code == 503 else None

    response = wait_for(stale, 15, "/readyz to report the stalled supervisor")
    assert "last completed a tick" in response.json()["detail"] and response.json()["supervisor_tick_age_seconds"] > 1
    fake.answer_after = 0.0
    for api in (bounded, unbounded):  # while the fake cluster still answers: their last calls end
        api.stop()


# ---------------------------------------------------------------- one supervisor per database


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_api_instance_serves_reads_and_does_not_supervise(
        api_factory: ApiFactory, request: pytest.FixtureRequest, backend: str) -> None:
    first = api_factory(**({"database_url": empty_database(request.getfixturevalue("postgres_url"))}
                           if backend == "postgresql" else {}))
    shared = {"database_url": first.env()["TCL_API_DATABASE_URL"], "runs_root": str(first.root / "runs"),
              "data_roots": json.dumps([str(first.root / "data")]), "workdir": str(first.root)}
    second = api_factory(**shared)
    assert httpx.get(f"{first.url}/readyz").json()["leader"] is True
    standby = httpx.get(f"{second.url}/readyz")
    assert standby.status_code == 200 and standby.json()["leader"] is False

    run = start_run(second, first.make_dataset("quick"), steps=3)  # posted to the standby
    assert second.wait_state(run["id"], TERMINAL)["state"] == "SUCCEEDED"
    launched = f"run {run['id']} attempt 1 started"
    assert launched in first.log_path.read_text() and launched not in second.log_path.read_text()

    first.stop(signal.SIGKILL)  # the leader dies: the standby takes the lock over
    wait_for(lambda: httpx.get(f"{second.url}/readyz").json()["leader"], 15, "the standby to lead")
    run = start_run(second, first.make_dataset("quick"), steps=3)
    assert second.wait_state(run["id"], TERMINAL)["state"] == "SUCCEEDED"
    assert f"run {run['id']} attempt 1 started" in second.log_path.read_text()


def test_a_late_heartbeat_of_a_replaced_attempt_does_not_start_the_new_one(
        api_factory: ApiFactory, postgres_url: str) -> None:
    """The race: the old attempt's heartbeat has passed the token check when the relaunch commits. A row lock
    holds its UPDATE between the two; the relaunch (new token, STARTING) commits under that lock."""
    api = api_factory(database_url=empty_database(postgres_url))
    never = api.root / "never"
    run = start_run(api, api.make_dataset("held", hold_until=str(never), hold_at_step=1), steps=5)
    pid = wait_for(lambda: next(iter(trainer_pids(run)), None), 30, "the trainer to start")
    old_token = run_token(pid)
    engine = create_engine(postgres_url)
    reply: dict[str, httpx.Response] = {}
    with engine.connect() as relaunch, engine.connect() as observer:
        relaunch.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": run["id"]})
        beat = threading.Thread(target=lambda: reply.setdefault("r", httpx.post(
            f"{api.url}/v1/runs/{run['id']}/heartbeat", json={"step": 1},
            headers={"Authorization": f"Bearer {old_token}"}, timeout=30)))
        beat.start()
        wait_for(lambda: blocked_updates(observer, "UPDATE runs SET state"), 15, "the heartbeat to wait on the row")
        relaunch.execute(text("UPDATE runs SET attempt = 2, token_hash = :hash WHERE id = :id"),
                         {"hash": hash_token("the-new-attempts-token"), "id": run["id"]})
        relaunch.commit()
        beat.join(30)
    engine.dispose()
    assert reply["r"].status_code == 401, reply["r"].text
    with api.client() as client:
        now = client.get(f"/v1/runs/{run['id']}").json()
    assert now["state"] == "STARTING" and now["progress"]["step"] is None
    never.touch()


def blocked_updates(connection: object, prefix: str) -> list[int]:
    """Backends waiting on a lock while running an UPDATE that starts with `prefix`."""
    rows = connection.execute(text(  # type: ignore[attr-defined]
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE :q"), {"q": prefix + "%"})
    pids = list(rows.scalars())
    connection.commit()  # type: ignore[attr-defined]  # pg_stat_activity is a snapshot per transaction
    return pids


# ---------------------------------------------------------------- orphans


class HandleWriteKilled(LocalLauncher):
    """The real local launcher; once it has started the attempt, the fault is armed: the run's row is
    locked, and the connection that then waits on it to store the handle is terminated."""

    def __init__(self, engine: Engine, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.engine = engine
        self.killed: list[int] = []

    def launch(self, request: LaunchRequest) -> str:
        handle = super().launch(request)
        locker = self.engine.connect()
        locker.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": request.run_id})

        def terminate_the_handle_write() -> None:
            with self.engine.connect() as observer:
                pids = wait_for(lambda: blocked_updates(observer, "UPDATE runs SET handle"), 15, "the handle write")
                self.killed += [observer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
                                for pid in pids]
            locker.rollback()
            locker.close()

        threading.Thread(target=terminate_the_handle_write, daemon=True).start()
        return handle


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    engine = make_engine(empty_database(postgres_url))
    migrate(engine)
    yield Store(engine)
    engine.dispose()


def test_a_launch_whose_handle_write_dies_is_adopted_not_orphaned(pg_store: Store, postgres_url: str,
                                                                  tmp_path: Path) -> None:
    data = tmp_path / "data" / "slow"
    data.mkdir(parents=True)
    (data / "behaviour.json").write_text(json.dumps({"step_seconds": 0.1}))
    settings = Settings(token="t" * 16, runs_root=tmp_path / "runs", workdir=tmp_path, local_runner="python",
                        trainer_script=FAKE_TRAINER, public_url="http://127.0.0.1:9")  # no API: reports are dropped
    launcher = HandleWriteKilled(create_engine(postgres_url), settings.runs_root, tmp_path, "python", FAKE_TRAINER)
    run_id = "a" * 32
    cfg = load("tiny", ["optim.max_steps=60", "checkpoint.every_steps=100", f"data.train={data}", "data.eval=null",
                        f"output_dir={settings.runs_root / run_id / 'output'}"])
    pg_store.create_run(run_id=run_id, name="orphan", launcher="local", resources=Resources().model_dump(),
                        config_yaml=dump(cfg), output_dir=cfg.output_dir, max_attempts=1)
    supervisor = Supervisor(pg_store, {"local": launcher}, settings, AlwaysLeader())

    with pytest.raises(OperationalError, match="terminat"):
        supervisor.tick()  # launches, then loses the connection that stores the handle
    assert wait_for(lambda: launcher.killed, 10, "the fault to report") == [True]  # its thread may finish later
    assert pg_store.get_run(run_id).handle is None
    pids = wait_for(lambda: {int(p.name): int(p.read_text()) for p in (Path(cfg.output_dir) / "pids").glob("*")},
                    15, "the trainer to run")
    (pgid,) = set(pids.values())
    assert live_group_members(pgid)  # running, and unknown to the database

    supervisor.tick()  # the next tick (or a restarted API) finds the attempt by what the launch recorded first
    adopted = pg_store.get_run(run_id)
    assert adopted.state in {"STARTING", "SUCCEEDED"} and json.loads(adopted.handle or "{}")["pid"] == pgid

    def finished() -> str | None:
        supervisor.tick()
        state = pg_store.get_run(run_id).state
        return state if state in TERMINAL else None

    assert wait_for(finished, 60, "the adopted attempt to end", interval=0.3) == "SUCCEEDED"
    assert not live_group_members(pgid)
    assert (Path(cfg.output_dir) / "checkpoints" / "step_000060").is_dir()
