"""Runs a trainer command at the head of its process group and records how it ended.

The API may restart while a run goes on; it is then no longer the parent of the run's processes and
cannot learn their exit status. This small wrapper can: it is their parent, and on Linux the child
subreaper of every process the run spawns, so it exits only once all of them are gone, and then
writes the command's exit status to a file the API reads when it reconciles. Before it starts the
command it writes its own handle (pid and kernel start time) to HANDLE_FILE: an API that dies, or
whose database write fails, right after the launch still finds the attempt there.

    python -m api.launchers.exit_recorder EXIT_FILE HANDLE_FILE -- COMMAND [ARG...]
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Adopt orphaned descendants (Linux); elsewhere the wrapper waits for the direct child only."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def process_start_time(pid: int) -> int | None:
    """Kernel start time of a live, non-zombie process (clock ticks since boot); None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def handle(pid: int, exit_file: Path) -> str:
    """The local launcher's handle of the attempt whose recorder is `pid`."""
    return json.dumps({"pid": pid, "start": process_start_time(pid), "exit_file": str(exit_file)})


def _reap_adopted() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def write_atomically(path: Path, text: str) -> None:
    """A reader sees no file or the whole text."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # the launcher and the recorder both write the handle
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 4 or args[2] != "--":
        sys.stderr.write(__doc__ or "")
        return 2
    exit_file, handle_file, command = Path(args[0]), Path(args[1]), args[3:]
    write_atomically(handle_file, handle(os.getpid(), exit_file))
    # A stop signals the whole group; the trainer handles it, the wrapper outlives it to record the end.
    # (A handler, not SIG_IGN: an ignored disposition would be inherited by the command.)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    _become_subreaper()
    try:
        code = subprocess.Popen(command).wait()
    except OSError as err:
        sys.stderr.write(f"exit_recorder: cannot start {command[0]}: {err}\n")
        code = 127
    _reap_adopted()
    write_atomically(exit_file, f"{code}\n")
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
