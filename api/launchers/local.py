"""The local launcher: the trainer as a process group on the API's machine.

Each attempt runs `exit_recorder` -> `deepspeed` runner -> ranks, in a new session (so signals to the
API do not reach it, and one killpg reaches all of it), with its output appended to
`<runs_root>/<run id>/train.log`. The handle records the leader's pid and kernel start time, so an
API restarted later tells the run's own processes from a reused pid and reads the recorded exit status.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import trainer
from api.launchers.base import Launcher, LaunchError, LaunchRequest, ResourceError, Status
from api.schemas import Resources
from trainer.config import RunConfig

log = logging.getLogger(__name__)

Runner = Literal["deepspeed", "python"]
_SCRUBBED_PREFIXES = ("TCL_API_",)
"""The server's own settings (its operator token among them) never reach a trainer."""


def default_script() -> Path:
    return Path(trainer.__file__).parent / "main.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_start_time(pid: int) -> int | None:
    """Kernel start time of a live, non-zombie process (clock ticks since boot); None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def child_env(base: Mapping[str, str], protocol: Mapping[str, str]) -> dict[str, str]:
    """The trainer's environment: the server's minus its own settings, plus the run's protocol variables."""
    env = {k: v for k, v in base.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(protocol)
    return env


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, runs_root: Path, workdir: Path, runner: Runner = "deepspeed", script: Path | None = None,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.runs_root = runs_root
        self.workdir = workdir
        self.runner = runner
        self.script = script or default_script()
        self._base_env = base_env
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Attempts this process started: polled to reap them (a zombie would look alive)."""

    def run_dir(self, run_id: str) -> Path:
        return self.runs_root / run_id

    def log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "train.log"

    def check(self, run_id: str, config: RunConfig, resources: Resources) -> None:
        if resources.nodes != 1:
            raise ResourceError(f"the local launcher runs on one node, not {resources.nodes};"
                                " use the kubernetes launcher")
        if resources.gpus_per_proc > 1:
            raise ResourceError("the local launcher gives each rank at most one GPU (gpus_per_proc 0 or 1)")
        if self.runner == "python" and resources.procs_per_node != 1:
            raise ResourceError("this server's local launcher starts one process per run (procs_per_node 1)")

    def placement(self, run_id: str) -> dict[str, Any]:
        run_dir = self.run_dir(run_id)
        return {"output_dir": str(run_dir / "output"), "data": {"cache_dir": str(run_dir / "mds-cache")}}

    def command(self, request: LaunchRequest, config_path: Path) -> list[str]:
        if self.runner == "python":
            head = [sys.executable, str(self.script)]
        else:
            head = [sys.executable, "-m", "deepspeed.launcher.runner",
                    "--num_gpus", str(request.resources.procs_per_node), "--master_port", str(free_port()),
                    str(self.script)]
        resume = ["--resume", "auto"] if request.attempt > 1 else []  # a relaunch continues from its last checkpoint
        return [*head, "--config", str(config_path), *resume]

    def launch(self, request: LaunchRequest) -> str:
        run_dir = self.run_dir(request.run_id)
        exit_file = run_dir / f"exit-status.{request.attempt}"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            config_path = run_dir / "config.yaml"
            config_path.write_text(request.config_yaml)
            command = self.command(request, config_path)
            with self.log_path(request.run_id).open("ab") as log_file:
                log_file.write(f"=== attempt {request.attempt}: {' '.join(command)}\n".encode())
                log_file.flush()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "api.launchers.exit_recorder", str(exit_file), "--", *command],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=self.workdir,
                    env=child_env(os.environ if self._base_env is None else self._base_env, request.env),
                    start_new_session=True,
                )
        except OSError as err:
            raise LaunchError(f"cannot start the trainer in {run_dir}: {err}") from err
        self._children[proc.pid] = proc
        log.info("run %s attempt %d started as process group %d", request.run_id, request.attempt, proc.pid)
        return json.dumps({"pid": proc.pid, "start": process_start_time(proc.pid), "exit_file": str(exit_file)})

    def _alive(self, pid: int, start: int | None) -> bool:
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[pid]
            return False
        now = process_start_time(pid)
        return now is not None and now == start

    def status(self, run_id: str, handle: str) -> Status:
        h = json.loads(handle)
        if self._alive(h["pid"], h["start"]):
            return Status(running=True)
        try:
            return Status(running=False, exit_code=int(Path(h["exit_file"]).read_text()))
        except (OSError, ValueError):
            return Status(running=False, detail="the run's processes ended without recording an exit status"
                                                " (killed, or the machine restarted)")

    def stop(self, run_id: str, handle: str, *, force: bool) -> None:
        h = json.loads(handle)
        if not self._alive(h["pid"], h["start"]):
            return
        sig = signal.SIGKILL if force else signal.SIGTERM
        try:
            os.killpg(h["pid"], sig)
        except ProcessLookupError:
            return
        log.info("run %s: sent %s to process group %d", run_id, sig.name, h["pid"])

    def release(self, run_id: str, handle: str) -> None:
        """Nothing to free: the recorder has reaped the group; the log and output stay for the user."""

    def read_log(self, run_id: str, handle: str | None, offset: int, limit: int = 1 << 20) -> tuple[bytes, int]:
        try:
            with self.log_path(run_id).open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size + offset) if offset < 0 else min(offset, size)
                f.seek(start)
                data = f.read(limit)
        except FileNotFoundError:
            return b"", max(offset, 0)
        return data, start + len(data)
