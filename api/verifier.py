"""The registry checks what it is told: a background thread recomputes the digest of every file://
checkpoint from its files (trainer.control_plane.checkpoint_digest, the trainer's own definition) and
records `verified`, `mismatch` (logged as an error: the files are not what was registered) or `missing`
(not readable from the API's machine). Only the instance that supervises does it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from api.store import Store
from trainer.control_plane import checkpoint_digest

log = logging.getLogger(__name__)


def verify(uri: str, digest: str, size_bytes: int) -> str:
    """verified, mismatch or missing, for a file:// checkpoint registered with `digest` and `size_bytes`."""
    path = Path(unquote(urlparse(uri).path))
    try:
        actual = checkpoint_digest(path)
    except OSError:
        return "missing"
    return "verified" if actual == (digest, size_bytes) else "mismatch"


class CheckpointVerifier:
    def __init__(self, store: Store, interval_seconds: float, active: Callable[[], bool]) -> None:
        self.store = store
        self.interval = interval_seconds
        self.active = active
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tcl-checkpoint-verifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.active():
                    self.run_once()
            except Exception:  # the database away: try again at the next interval
                log.exception("checkpoint verification failed")

    def run_once(self) -> int:
        """Verify the pending checkpoints; returns how many were checked."""
        rows = self.store.pending_verifications()
        for row in rows:
            result = verify(row.uri, row.digest, row.size_bytes)
            self.store.set_verification(row.id, result)
            if result == "mismatch":
                log.error("run %s: checkpoint %s does not match its registered digest", row.run_id, row.uri)
            elif result == "missing":
                log.warning("run %s: checkpoint %s cannot be read here: not verified", row.run_id, row.uri)
        return len(rows)
