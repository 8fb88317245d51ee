"""Runs of the local launcher cannot read each other or the API (TCL_API_RUN_USERS).

Two real runs under two real users made here with useradd: run B's process tries to read run A's
environment (its run token), A's checkpoint and log, the API's environment (the operator token) and the
SQLite registry, and to write the registry. Without run users every run is the API's own uid (root here),
and all of that succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ApiServer, _kill_leftover_runs, start_run, trainer_pids, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def run_users() -> Iterator[list[str]]:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create the run users")
    names = [f"tcl-run-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for name in names:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
        yield names
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False, capture_output=True)


def blocking_ancestor(path: Path) -> Path | None:
    """The first folder on the way to `path` that other users cannot pass through."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def namespace_wrapper(stage: Path) -> list[str]:
    """Where the interpreter lies under a folder closed to other users (pyenv under /root on a dev machine),
    the API runs in its own mount namespace in which that folder is an empty tmpfs showing only the
    interpreter's tree: the run users can start Python; nothing on the host changes."""
    interpreter = Path(sys.executable).resolve()
    closed = blocking_ancestor(interpreter)
    if closed is None:
        return []
    needed = closed / interpreter.relative_to(closed).parts[0]
    stage.mkdir()
    script = (f'mount --bind "{needed}" "{stage}" && mount -t tmpfs -o mode=0711 tmpfs "{closed}" && '
              f'mkdir "{needed}" && mount --move "{stage}" "{needed}" && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


@pytest.fixture
def isolated_api(run_users: list[str]) -> Iterator[ApiServer]:
    root = Path(tempfile.mkdtemp(prefix="tcl-isolation-"))
    root.chmod(0o755)  # the runs pass through to their own folder
    (root / "data").mkdir(mode=0o755)
    api = ApiServer(root, {"TCL_API_RUN_USERS": json.dumps(run_users), "TCL_API_MAX_ACTIVE_RUNS": "2"},
                    wrapper=namespace_wrapper(root / "stage"))
    try:
        yield api.start()
    finally:
        api.stop()
        _kill_leftover_runs(root / "runs")
        shutil.rmtree(root, ignore_errors=True)


def test_a_run_reads_neither_another_run_nor_the_api(isolated_api: ApiServer, run_users: list[str]) -> None:
    api = isolated_api
    release = api.root / "data" / "release"
    run_a = start_run(api, api.make_dataset("a", hold_until=str(release), hold_at_step=4), steps=5)
    a_pid = wait_for(lambda: next(iter(trainer_pids(run_a)), None), 30, "run A to start")
    a_dir = Path(run_a["output_dir"]).parent
    a_checkpoint = Path(run_a["output_dir"]) / "checkpoints" / "step_000003" / "client_state.json"
    wait_for(a_checkpoint.exists, 30, "run A's first checkpoint")
    database = api.root / "api.db"
    assert api.proc is not None

    forbidden = [f"/proc/{a_pid}/environ", str(a_checkpoint), str(a_dir / "train.log"),
                 f"/proc/{api.proc.pid}/environ", str(database)]
    own = str(api.root / "data" / "b" / "behaviour.json")  # readable by B: the probe itself works
    run_b = start_run(api, api.make_dataset("b", probe={"read": [*forbidden, own], "write": [str(database)]}),
                      steps=2)
    assert api.wait_state(run_b["id"], {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
    probed = json.loads((Path(run_b["output_dir"]) / "probe.json").read_text())
    release.touch()
    assert api.wait_state(run_a["id"], {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"

    assert probed == {f"r:{path}": "PermissionError" for path in forbidden} | {
        f"r:{own}": "ok", f"w:{database}": "PermissionError"}
    owners = {Path(run["output_dir"]).parent.stat().st_uid for run in (run_a, run_b)}
    assert len(owners) == 2 and all(stat.S_IMODE(Path(run["output_dir"]).parent.stat().st_mode) == 0o700
                                    for run in (run_a, run_b))
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
