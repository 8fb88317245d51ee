"""Runs a trainer command at the head of its process group and records how it ended.

The API may restart while a run goes on; it is then no longer the parent of the run's processes and
cannot learn their exit status. This small wrapper can: it is their parent, and on Linux the child
subreaper of every process the run spawns, so it exits only once all of them are gone, and then
writes the command's exit status to a file the API reads when it reconciles.

    python -m api.launchers.exit_recorder EXIT_FILE -- COMMAND [ARG...]
"""

from __future__ import annotations

import ctypes
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


def _reap_adopted() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def record(exit_file: Path, code: int) -> None:
    """Write the status atomically: a reader sees no file or the whole number."""
    tmp = exit_file.with_name(exit_file.name + ".tmp")
    tmp.write_text(f"{code}\n")
    os.replace(tmp, exit_file)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write(__doc__ or "")
        return 2
    exit_file, command = Path(args[0]), args[2:]
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
    record(exit_file, code)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
