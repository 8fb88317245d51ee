"""The local launcher and its exit recorder, with real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trainer
from api.launchers.base import LaunchRequest, ResourceError, Status
from api.launchers.local import LocalLauncher, child_env, default_script
from api.schemas import Resources
from tests.api.conftest import live_group_members, wait_for
from trainer.config import dump, load

RECORDER = [sys.executable, "-m", "api.launchers.exit_recorder"]


def record(tmp_path: Path, code: str) -> tuple[int, str]:
    exit_file = tmp_path / "exit"
    proc = subprocess.run([*RECORDER, str(exit_file), str(tmp_path / "handle"), "--", sys.executable, "-c", code],
                          timeout=30, check=False)
    return proc.returncode, exit_file.read_text().strip()


def test_the_recorder_writes_the_commands_exit_status(tmp_path: Path) -> None:
    assert record(tmp_path, "pass") == (0, "0")
    assert record(tmp_path, "raise SystemExit(3)") == (3, "3")
    assert record(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)") == (128 + 15, "-15")


def test_the_recorder_reports_a_command_that_cannot_start(tmp_path: Path) -> None:
    exit_file = tmp_path / "exit"
    command = [*RECORDER, str(exit_file), str(tmp_path / "handle"), "--", str(tmp_path / "no-such-program")]
    proc = subprocess.run(command, timeout=30, capture_output=True, text=True, check=False)
    assert proc.returncode == 127 and exit_file.read_text().strip() == "127"
    assert "cannot start" in proc.stderr


def test_the_recorder_outlives_orphaned_descendants(tmp_path: Path) -> None:
    """The command forks a grandchild and exits; the recorder waits for the grandchild too."""
    marker = tmp_path / "grandchild-done"
    code = ("import os, time, sys\n"
            "if os.fork() == 0:\n"
            f"    time.sleep(1.0); open({str(marker)!r}, 'w').close(); os._exit(0)\n"
            "sys.exit(5)\n")
    assert record(tmp_path, code) == (5, "5")
    assert marker.exists()


def test_the_recorder_does_not_hand_an_ignored_sigterm_to_the_command(tmp_path: Path) -> None:
    code = "import signal; assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL"
    assert record(tmp_path, code) == (0, "0")


def ended(launcher: LocalLauncher, handle: str) -> Status | None:
    status = launcher.status("r" * 32, handle)
    return None if status.running else status


def request(tmp_path: Path, attempt: int = 1) -> LaunchRequest:
    cfg = load("tiny", [f"output_dir={tmp_path / 'out'}"])
    return LaunchRequest(run_id="r" * 32, attempt=attempt, config=cfg, config_yaml=dump(cfg), resources=Resources(),
                         env={"TCL_RUN_ID": "r" * 32, "TCL_RUN_TOKEN": "tok", "TCL_API_URL": "http://127.0.0.1:1"})


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text("import sys, time, os\n" + body)
    return path


def test_an_attempt_runs_logs_and_ends_with_its_status(tmp_path: Path) -> None:
    body = "print('config at', sys.argv[1:], os.environ['TCL_RUN_ID'][:4], flush=True)\ntime.sleep(0.5)\nsys.exit(4)\n"
    launcher = LocalLauncher(tmp_path / "runs", tmp_path, "python", script(tmp_path, body))
    handle = launcher.launch(request(tmp_path))
    assert launcher.status("r" * 32, handle).running
    status = wait_for(lambda: ended(launcher, handle), 30, "the exit")
    assert status.exit_code == 4
    run_dir = tmp_path / "runs" / ("r" * 32)
    log, end = launcher.read_log("r" * 32, handle, 0)
    assert f"config at ['--config', '{run_dir / 'config.yaml'}'] rrrr" in log.decode()
    assert log.startswith(b"=== attempt 1: ") and end == len(log) == (run_dir / "train.log").stat().st_size
    tail, tail_end = launcher.read_log("r" * 32, handle, -6)
    assert tail == log[-6:] and tail_end == end
    assert launcher.read_log("r" * 32, handle, end) == (b"", end)
    assert (run_dir / "config.yaml").read_text() == request(tmp_path).config_yaml


def test_a_restarted_api_finds_the_attempt_and_stops_it(tmp_path: Path) -> None:
    """A second launcher (as after an API restart) knows the process only by its handle."""
    body = "print('up', flush=True)\ntime.sleep(60)\n"
    first = LocalLauncher(tmp_path / "runs", tmp_path, "python", script(tmp_path, body))
    handle = first.launch(request(tmp_path))
    wait_for(lambda: b"up" in first.read_log("r" * 32, handle, 0)[0], 30, "the trainer to start")
    second = LocalLauncher(tmp_path / "runs", tmp_path, "python", script(tmp_path, body))
    assert second.status("r" * 32, handle).running
    second.stop("r" * 32, handle, force=False)
    status = wait_for(lambda: ended(second, handle), 30, "the stop")
    assert status.exit_code == -signal.SIGTERM
    first.status("r" * 32, handle)  # reaps its child


def test_a_reused_pid_is_not_taken_for_the_run(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        forged = f'{{"pid": {stranger.pid}, "start": 1, "exit_file": "{tmp_path / "none"}"}}'
        launcher = LocalLauncher(tmp_path / "runs", tmp_path, "python", default_script())
        status = launcher.status("x", forged)
        assert not status.running and status.exit_code is None and "without recording" in status.detail
        launcher.stop("x", forged, force=True)
        time.sleep(0.2)
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_the_trainer_environment_drops_the_servers_settings() -> None:
    env = child_env({"PATH": "/bin", "TCL_API_TOKEN": "operator", "TCL_API_DATABASE_URL": "postgresql://u:p@h/db"},
                    {"TCL_RUN_TOKEN": "run", "TCL_API_URL": "http://api"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TCL_RUN_TOKEN": "run",
                   "TCL_API_URL": "http://api"}


def test_the_deepspeed_command_follows_the_contract(tmp_path: Path) -> None:
    launcher = LocalLauncher(tmp_path, tmp_path)
    req = request(tmp_path)
    req = LaunchRequest(**{**req.__dict__, "resources": Resources(procs_per_node=2)})
    command = launcher.command(req, tmp_path / "config.yaml")
    head, port, tail = command[:6], command[6], command[7:]
    assert head == [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port"]
    assert 0 < int(port) < 65536
    assert tail == [str(Path(trainer.__file__).parent / "main.py"), "--config", str(tmp_path / "config.yaml")]


@pytest.mark.parametrize(("resources", "message"), [
    (Resources(nodes=2), "one node"),
    (Resources(gpus_per_proc=2), "at most one GPU"),
])
def test_resources_beyond_one_machine_are_refused(tmp_path: Path, resources: Resources, message: str) -> None:
    cfg = load("tiny")
    with pytest.raises(ResourceError, match=message):
        LocalLauncher(tmp_path, tmp_path).check("x", cfg, resources)
    with pytest.raises(ResourceError, match="one process"):
        LocalLauncher(tmp_path, tmp_path, "python").check("x", cfg, Resources(procs_per_node=2))


def test_no_process_is_left_after_a_forced_stop(tmp_path: Path) -> None:
    body = ("import subprocess\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print('up', flush=True)\ntime.sleep(60)\n")
    launcher = LocalLauncher(tmp_path / "runs", tmp_path, "python", script(tmp_path, body))
    handle = launcher.launch(request(tmp_path))
    wait_for(lambda: b"up" in launcher.read_log("r" * 32, handle, 0)[0], 30, "the trainer to start")
    pgid = int(json.loads(handle)["pid"])
    assert len(live_group_members(pgid)) == 3  # recorder, trainer, its child
    launcher.stop("r" * 32, handle, force=True)
    wait_for(lambda: not launcher.status("r" * 32, handle).running, 30, "the stop")
    assert wait_for(lambda: not live_group_members(pgid), 10, "the group to be gone")
