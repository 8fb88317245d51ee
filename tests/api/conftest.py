"""Fixtures of the API tests: stores on SQLite and on a real PostgreSQL, and the API served for real
(`python -m api`, uvicorn on loopback) with the stand-in trainer behind its local launcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.store import Store, make_engine, migrate
from tests.api.fake_kubernetes import FakeKubernetes

FAKE_TRAINER = Path(__file__).parent / "fake_trainer.py"
OPERATOR_TOKEN = "operator-token-for-tests-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until condition() is truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes of a process group that still run (zombies wait for init to reap them)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def processes_started_with(argument: str) -> dict[int, int]:
    """pid -> process group of the live processes whose command line contains `argument`."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if argument.encode() in cmdline.read_bytes().split(b"\0"):
                found[int(cmdline.parent.name)] = os.getpgid(int(cmdline.parent.name))
        except (OSError, ProcessLookupError):
            continue
    return found


# ---------------------------------------------------------------- PostgreSQL


def _as_postgres(*command: str) -> str:
    return subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL cluster (started here if it is down)."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.skip("PostgreSQL binaries are absent (pg_ctlcluster not found)")
    version, cluster, port, status = subprocess.run(
        ["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True).stdout.split()[:4]
    started_here = status != "online"
    if started_here:
        subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=True)
    name, password = f"tcl_api_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    _as_postgres("psql", "-p", port, "-qc", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    _as_postgres("createdb", "-p", port, "-O", name, name)
    try:
        yield f"postgresql+psycopg://{name}:{password}@127.0.0.1:{port}/{name}"
    finally:
        _as_postgres("dropdb", "-p", port, "--if-exists", "--force", name)
        _as_postgres("psql", "-p", port, "-qc", f"DROP ROLE IF EXISTS {name}")
        if started_here:
            subprocess.run(["pg_ctlcluster", version, cluster, "stop"], check=True)


def empty_database(url: str) -> str:
    """The PostgreSQL database emptied (other tests leave their runs in it); returns the url."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty store on each backend."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'api.db'}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_url"))
        with engine.begin() as connection:  # every test starts from an empty schema
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    migrate(engine)
    yield Store(engine)
    engine.dispose()


# ---------------------------------------------------------------- the API served for real


@dataclass
class ApiServer:
    """`python -m api` in a subprocess; its log goes to `root/api.log`."""

    root: Path
    settings: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    wrapper: list[str] = field(default_factory=list)
    """A command that execs the API (`python -m api` is appended), e.g. into another mount namespace."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "api.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TCL_")}
        env.update({
            "TCL_API_TOKEN": OPERATOR_TOKEN, "TCL_API_PORT": str(self.port),
            "TCL_API_DATABASE_URL": f"sqlite:///{self.root / 'api.db'}", "TCL_API_RUNS_ROOT": str(self.root / "runs"),
            "TCL_API_DATA_ROOTS": json.dumps([str(self.root / "data")]), "TCL_API_WORKDIR": str(self.root),
            "TCL_API_CONFIG_ROOTS": json.dumps([str(self.root / "configs")]),
            "TCL_API_LOCAL_RUNNER": "python", "TCL_API_TRAINER_SCRIPT": str(FAKE_TRAINER),
            "TCL_API_POLL_INTERVAL_SECONDS": "0.2", "TCL_API_CANCEL_GRACE_SECONDS": "10",
        })
        env.update(self.settings)
        return env

    def start(self) -> ApiServer:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", "api"], env=self.env(), cwd=self.root,
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 30, "the API to be ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the API exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self, token: str | None = OPERATOR_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def make_dataset(self, name: str, **behaviour: Any) -> str:
        """A data folder under the data root; `behaviour` steers the stand-in trainer."""
        folder = self.root / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "behaviour.json").write_text(json.dumps(behaviour))
        (folder / "index.json").write_text('{"version": 2, "shards": []}')  # an MDS index, as admission requires
        return str(folder)

    def wait_state(self, run_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
        with self.client() as client:
            def reached() -> dict[str, Any] | None:
                run = client.get(f"/v1/runs/{run_id}").json()
                return run if run["state"] in states else None

            try:
                return wait_for(reached, timeout, f"run {run_id} to reach {states}", interval=0.2)
            except AssertionError:
                raise AssertionError(f"run {run_id} is {client.get(f'/v1/runs/{run_id}').json()['state']}, "
                                     f"not {states}; API log:\n{self.log_path.read_text()[-3000:]}") from None


def start_run(api: ApiServer, dataset: str, steps: int, *, max_attempts: int = 1, **extra: Any) -> dict[str, Any]:
    """POST a tiny-preset run of `steps` steps on `dataset` (made with ApiServer.make_dataset)."""
    body = {"config": {"preset": "tiny", "overrides": [
        f"optim.max_steps={steps}", "checkpoint.every_steps=3", "log.every_steps=1", f"data.train={dataset}",
        "data.eval=null"]}, "max_attempts": max_attempts, **extra}
    with api.client() as client:
        response = client.post("/v1/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def trainer_pids(run: dict[str, Any]) -> dict[int, int]:
    """pid -> process group of every trainer process the run started (each writes a file)."""
    return {int(p.name): int(p.read_text()) for p in (Path(run["output_dir"]) / "pids").glob("*")}


ApiFactory = Callable[..., ApiServer]


@pytest.fixture
def api_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiFactory]:
    """Start API servers with extra TCL_API_* settings; all are stopped (and their runs killed) at the end."""
    servers: list[ApiServer] = []

    def start(**settings: str) -> ApiServer:
        server = ApiServer(tmp_path_factory.mktemp("api"), {f"TCL_API_{k.upper()}": v for k, v in settings.items()})
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
        _kill_leftover_runs(server.root / "runs")


def _kill_leftover_runs(runs_root: Path) -> None:
    """Process groups a failed test may have left behind (each stand-in rank records its group)."""
    for pid_file in runs_root.glob("*/output/pids/*"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    """A fake Kubernetes API server on loopback."""
    server = FakeKubernetes()
    yield server
    server.close()


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One API shared by the tests that need no special settings (the stand-in trainer as one plain process)."""
    server = ApiServer(tmp_path_factory.mktemp("api")).start()
    yield server
    server.stop()
    _kill_leftover_runs(server.root / "runs")
