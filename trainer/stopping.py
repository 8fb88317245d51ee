"""Stop requests: SIGTERM (or the API's cancel) -> every rank stops at the same step, checkpoints, exits 143.

A Python signal handler runs only when the main thread is back in the interpreter: a rank blocked in a
collective (a peer vanished) would not see SIGTERM until the collective timed out. So the C-level
handler's wake-up byte (`signal.set_wakeup_fd`) is read by a watcher thread, which records the request
at once and arms a grace timer: a rank that has not reached the agreed stop step by then exits with
ExitCode.STOP_UNCLEAN, without a checkpoint, instead of being killed later with nothing said.

DataLoader workers share the trainer's process group, so a `killpg` (the API's local launcher, the
deepspeed launcher's tree kill) reaches them too: they ignore SIGTERM (`ignore_stop_signals`, their
worker_init_fn) and end when their parent ends them, instead of dying mid-batch.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from trainer.exit_codes import ExitCode

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM,)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """worker_init_fn of the data loaders: the parent decides when a worker ends."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)  # a forked worker inherits the trainer's wake-up pipe: not its business


class StopRequest:
    """Whether a stop was asked for (a signal, or `request()` from the control plane), and the grace
    timer that bounds how long a rank may take to act on it. Install once, from the main thread."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._requested = threading.Event()
        self._acted_on = threading.Event()
        self.reason = ""

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def install(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd,), name="stop-watcher", daemon=True).start()

    def request(self, reason: str) -> None:
        """Ask for a stop (idempotent); the grace timer starts with the first request."""
        if self._requested.is_set():
            return
        self.reason = reason
        self._requested.set()
        logger.warning("%s: stopping at the next step (checkpoint, then exit %d)", reason, ExitCode.STOPPED)
        threading.Thread(target=self._expire, name="stop-grace", daemon=True).start()

    def acting(self) -> None:
        """Every rank agreed to stop: the checkpoint and exit are under way, the grace timer is off
        (the collectives of the checkpoint are bounded by the collective timeout)."""
        self._acted_on.set()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.request(f"signal {signal.Signals(signum).name}")

    def _watch(self, read_fd: int) -> None:
        stop_numbers = {int(s) for s in STOP_SIGNALS}
        while True:
            data = os.read(read_fd, 64)
            for number in data:
                if number in stop_numbers:
                    self.request(f"signal {signal.Signals(number).name}")

    def _expire(self) -> None:
        if self._acted_on.wait(self.grace_s):
            return
        logger.error(
            "stop requested %.0f s ago (%s) and this rank has not reached a step boundary (blocked in a"
            " collective?): exiting %d without a checkpoint", self.grace_s, self.reason, ExitCode.STOP_UNCLEAN,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        time.sleep(0.1)
        os._exit(ExitCode.STOP_UNCLEAN)
