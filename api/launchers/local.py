"""The local launcher: the trainer as a process group on the API's machine.

Each attempt runs `exit_recorder` -> `deepspeed` runner -> ranks, in a new session (so signals to the
API do not reach it, and one killpg reaches all of it), with its output appended to
`<runs_root>/<run id>/train.log`. The handle records the leader's pid and kernel start time, so an
API restarted later tells the run's own processes from a reused pid and reads the recorded exit status;
the recorder writes the same handle to `attempt-<n>.handle` before it starts anything, which is how an
attempt whose handle never reached the database is found again (`recover`).

A cancel sends SIGTERM to the trainer's ranks only, not to the launchers above them (DeepSpeed's
launcher would kill the ranks 30 s later) nor to their DataLoader workers; the run then has the API's
whole cancel grace to checkpoint, after which the group is killed.

With `run_users`, each attempt runs under a user of that pool that no other live process uses, in a
run folder owned by it with mode 0700, with HOME there: runs read neither each other's files, tokens
(/proc/<pid>/environ) nor the API's.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import trainer
from api.launchers.base import Launcher, LaunchError, LaunchRequest, ResourceError, Status
from api.launchers.exit_recorder import handle as recorder_handle
from api.launchers.exit_recorder import process_start_time, write_atomically
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


def _processes() -> Iterator[tuple[int, int, int, int, list[bytes]]]:
    """(pid, parent pid, process group, real uid, command line) of every live process."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            uid = int(next(line for line in (proc / "status").read_text().splitlines()
                           if line.startswith("Uid:")).split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, StopIteration, ValueError):
            continue
        if fields[0] not in ("Z", "X"):
            yield int(proc.name), int(fields[1]), int(fields[2]), uid, cmdline


def _runs_script(cmdline: list[bytes], script: Path) -> bool:
    """`python [-options] SCRIPT ...`: the interpreter's first operand is the script (not `-m module`)."""
    operands = [arg for arg in cmdline[1:] if arg and not arg.startswith(b"-")]
    return bool(operands) and operands[0] == str(script).encode()


def trainer_ranks(pgid: int, script: Path) -> list[int]:
    """The ranks of a run's process group: processes running `script` whose parent does not (a DataLoader
    worker is a fork of its rank, with the same command line)."""
    members = {pid: (ppid, _runs_script(cmdline, script)) for pid, ppid, group, _, cmdline in _processes()
               if group == pgid}
    return [pid for pid, (ppid, rank) in members.items() if rank and not members.get(ppid, (0, False))[1]]


def child_env(base: Mapping[str, str], protocol: Mapping[str, str]) -> dict[str, str]:
    """The trainer's environment: the server's minus its own settings, plus the run's protocol variables."""
    env = {k: v for k, v in base.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(protocol)
    return env


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, runs_root: Path, workdir: Path, runner: Runner = "deepspeed", script: Path | None = None,
                 base_env: Mapping[str, str] | None = None, run_users: list[str] | None = None) -> None:
        self.runs_root = runs_root
        self.workdir = workdir
        self.runner = runner
        self.script = script or default_script()
        self._base_env = base_env
        self.run_users = [pwd.getpwnam(name) for name in run_users or []]
        """The pool of users trainers run as (a KeyError at start-up names a user that does not exist)."""
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

    def handle_file(self, run_id: str, attempt: int) -> Path:
        return self.run_dir(run_id) / f"attempt-{attempt}.handle"

    def _free_user(self) -> pwd.struct_passwd:
        """A user of the pool that no live process runs as."""
        busy = {uid for _, _, _, uid, _ in _processes()}
        for user in self.run_users:
            if user.pw_uid not in busy:
                return user
        raise LaunchError(f"every run user ({', '.join(u.pw_name for u in self.run_users)}) is busy")

    def _prepare(self, run_dir: Path, user: pwd.struct_passwd | None) -> None:
        """The run folder; with a run user, owned by it and closed to everyone else."""
        self.runs_root.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(exist_ok=True)
        if user is not None:
            self.runs_root.chmod(0o711)  # run users pass through to their own folder, list nothing
            os.chown(run_dir, user.pw_uid, user.pw_gid)
            run_dir.chmod(0o700)

    def launch(self, request: LaunchRequest) -> str:
        run_dir = self.run_dir(request.run_id)
        exit_file = run_dir / f"exit-status.{request.attempt}"
        env = child_env(os.environ if self._base_env is None else self._base_env, request.env)
        user = self._free_user() if self.run_users else None
        if user is not None:
            env.update({"HOME": str(run_dir), "USER": user.pw_name, "LOGNAME": user.pw_name})
        try:
            self._prepare(run_dir, user)
            config_path = run_dir / "config.yaml"
            config_path.write_text(request.config_yaml)
            if user is not None:
                os.chown(config_path, user.pw_uid, user.pw_gid)
            command = self.command(request, config_path)
            with self.log_path(request.run_id).open("ab") as log_file:
                log_file.write(f"=== attempt {request.attempt}: {' '.join(command)}\n".encode())
                log_file.flush()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "api.launchers.exit_recorder", str(exit_file),
                     str(self.handle_file(request.run_id, request.attempt)), "--", *command],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=self.workdir,
                    env=env, start_new_session=True,
                    **({} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}),
                )
        except OSError as err:
            raise LaunchError(f"cannot start the trainer in {run_dir}: {err}") from err
        self._children[proc.pid] = proc
        handle = recorder_handle(proc.pid, exit_file)
        write_atomically(self.handle_file(request.run_id, request.attempt), handle)  # the recorder writes it too
        log.info("run %s attempt %d started as process group %d%s", request.run_id, request.attempt, proc.pid,
                 "" if user is None else f" (user {user.pw_name})")
        return handle

    def recover(self, run_id: str, attempt: int) -> str | None:
        try:
            return self.handle_file(run_id, attempt).read_text()
        except FileNotFoundError:
            return None

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
        try:
            ranks = [] if force else trainer_ranks(h["pid"], self.script)
            if ranks:
                for rank in ranks:
                    os.kill(rank, signal.SIGTERM)
            else:  # forced, or no rank started yet: nothing to checkpoint
                os.killpg(h["pid"], signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            return
        what = f"SIGTERM to ranks {ranks}" if ranks else f"{'SIGKILL' if force else 'SIGTERM'} to the group"
        log.info("run %s: sent %s of process group %d", run_id, what, h["pid"])

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
