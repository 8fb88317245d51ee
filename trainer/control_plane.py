"""The trainer's side of the control-plane protocol: heartbeats and checkpoint registration.

A run launched by the API finds TCL_API_URL, TCL_RUN_ID and TCL_RUN_TOKEN in its environment;
global rank 0 reports through this client. Reporting is best effort: a slow or absent API must
never stop training, so network errors are logged and retried a little, never raised.
Stdlib only (no torch, no HTTP library) so that it imports wherever the trainer runs.

Heartbeat metrics: loss terms by name (`loss`, `cma_i2t`, ...) and retrieval results as
`eval/<metric>` (`eval/r_mean`, `eval/tr_r1`); the API exports them as tcl_run_loss{term} and
tcl_run_eval_recall{metric}.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_URL = "TCL_API_URL"
ENV_RUN_ID = "TCL_RUN_ID"
ENV_TOKEN = "TCL_RUN_TOKEN"
_CHUNK = 1 << 20


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_digest(path: Path) -> tuple[str, int]:
    """(sha256 of the manifest, total bytes) of a checkpoint file or directory.

    The manifest has one line `<file sha256>  <posix path relative to the checkpoint>` per file,
    sorted by path, so the digest names the content whatever the directory is called or where it lives.
    A single file is a manifest of one line under its own name.
    """
    path = Path(path)
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    else:
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    manifest = "".join(f"{_file_sha256(p)}  {name}\n" for name, p in files)
    return hashlib.sha256(manifest.encode()).hexdigest(), sum(p.stat().st_size for _, p in files)


def _finite_or_none(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: a diverged loss is sent as null, which the API shows as NaN."""
    values = {name: float(v) for name, v in metrics.items()}
    return {name: v if math.isfinite(v) else None for name, v in values.items()}


class ControlPlane:
    """Posts a run's progress and checkpoints to the API with the run's own bearer token."""

    def __init__(self, url: str, run_id: str, token: str, timeout: float = 5.0, retry_delay: float = 0.5) -> None:
        self.base = f"{url.rstrip('/')}/v1/runs/{run_id}"
        self.run_id = run_id
        self._token = token
        self.timeout = timeout
        self.retry_delay = retry_delay
        self._tracking: dict[str, str] | None = None

    def __repr__(self) -> str:  # never show the token
        return f"ControlPlane({self.base!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ControlPlane | None:
        """The client for the run this process belongs to; None when not launched by the API."""
        env = os.environ if environ is None else environ
        url, run_id, token = env.get(ENV_URL), env.get(ENV_RUN_ID), env.get(ENV_TOKEN)
        if not (url and run_id and token):
            return None
        return cls(url, run_id, token)

    def heartbeat(
        self, step: int, total_steps: int | None, epoch: float | None, samples_per_sec: float | None,
        metrics: Mapping[str, float],
    ) -> bool:
        """Report progress; the first heartbeat moves the run from STARTING to RUNNING. True when the
        API's reply says `cancel_requested` (the trainer then checkpoints and stops).
        Not retried: the next heartbeat supersedes a lost one, and training does not wait."""
        body = {
            "step": step, "total_steps": total_steps, "epoch": epoch,
            "samples_per_sec": samples_per_sec, "metrics": _finite_or_none(metrics),
        }
        if self._tracking is not None:
            body["tracking"], self._tracking = self._tracking, None
        reply = self._call("POST", "/heartbeat", body, attempts=1)
        return reply is not None and reply.get("cancel_requested") is True

    def report_tracking(self, locations: Mapping[str, str]) -> None:
        """Send where the run is tracked (trainer.tracking: tracker -> URL or folder) with the next heartbeat,
        once; values are cut to the API's 2048 characters so the heartbeat is never refused for them."""
        self._tracking = {name: where[:2048] for name, where in locations.items()} or None

    def register_checkpoint(
        self, path: Path, step: int, metrics: Mapping[str, float], uri: str | None = None
    ) -> None:
        """Register a completely written checkpoint (file or directory) with its digest and size. `uri` is
        its address when that is not `path` (s3:// output: `path` is the local staging copy it was uploaded from)."""
        digest, size = checkpoint_digest(path)
        body = {
            "uri": uri or Path(path).resolve().as_uri(), "step": step, "metrics": _finite_or_none(metrics),
            "size_bytes": size, "digest": digest,
        }
        self._call("POST", "/checkpoints", body, attempts=3)

    def kept_checkpoints(self) -> list[str] | None:
        """URIs of the checkpoints the registry keeps (pinned, or best by a metric), which pruning must not
        delete; None when the API gave no answer (then nothing is pruned this time)."""
        reply = self._call("GET", "/checkpoints/kept", None, attempts=2)
        uris = reply.get("uris") if reply is not None else None
        return [u for u in uris if isinstance(u, str)] if isinstance(uris, list) else None

    def report_deleted(self, uris: list[str]) -> None:
        """Tell the registry which checkpoints pruning deleted, by the URIs they were registered with."""
        if uris:
            self._call("POST", "/checkpoints/deleted", {"uris": uris}, attempts=3)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, attempts: int) -> dict[str, Any] | None:
        """Send JSON (none for a GET); retry network errors and 5xx, give up quietly on 4xx. The reply's JSON
        object when accepted ({} when the reply is not one), None when not accepted."""
        request = urllib.request.Request(
            self.base + path, data=None if body is None else json.dumps(body).encode(), method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"},
        )
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    try:
                        reply = json.loads(response.read(1 << 16))
                    except ValueError:
                        return {}
                    return reply if isinstance(reply, dict) else {}
            except urllib.error.HTTPError as err:
                detail = err.read(500).decode(errors="replace")
                if err.code < 500:
                    log.error("control plane refused %s (HTTP %d): %s", path, err.code, detail)
                    return None
                log.warning("control plane %s failed (HTTP %d, attempt %d/%d)", path, err.code, attempt, attempts)
            except (OSError, TimeoutError) as err:  # URLError is an OSError
                log.warning("control plane %s unreachable (attempt %d/%d): %s", path, attempt, attempts, err)
            if attempt < attempts:
                time.sleep(self.retry_delay * attempt)
        return None
