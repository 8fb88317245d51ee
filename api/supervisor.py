"""The supervisor: a background thread that launches queued runs and follows launched ones to their end.

Each tick it looks at every launched run (this is also how an API restarted mid-run reconciles:
the first tick finds the runs of the previous process alive or ended, and adopts an attempt launched
just before a crash whose handle was never stored), forces cancels whose grace has run out, kills
attempts whose heartbeats stopped, relaunches failed attempts that have attempts left, then starts
PENDING runs while fewer than max_active_runs are launched. Only the instance holding the database's
leader lock (api/leader.py) ticks; the others serve the REST API and wait for the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import yaml

from api.launchers.base import Launcher, LaunchError, LaunchRequest, Status
from api.leader import LeaderLock
from api.schemas import Resources
from api.security import hash_token, new_token
from api.settings import Settings
from api.states import LAUNCHED, RunState
from api.store import Conflict, RunRow, Store
from api.store.models import utcnow
from trainer.config import RunConfig, from_dict
from trainer.control_plane import ENV_RUN_ID, ENV_TOKEN, ENV_URL

log = logging.getLogger(__name__)


def last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


class Supervisor:
    def __init__(self, store: Store, launchers: dict[str, Launcher], settings: Settings, lock: LeaderLock) -> None:
        self.store = store
        self.launchers = launchers
        self.settings = settings
        self.lock = lock
        self.leader = False
        self._leader_since: datetime | None = None
        self._last_tick: float | None = None
        self._stopped: dict[tuple[str, int], str] = {}
        """(run id, attempt) -> why the supervisor killed it, for the reason of its ending."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tcl-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.lock.release()

    def wake(self) -> None:
        """Run a tick now (after a new run or a cancel) instead of at the next interval."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick_age(self) -> float | None:
        """Seconds since the last completed tick (a standby's lock attempt counts); None before the first."""
        return None if self._last_tick is None else time.monotonic() - self._last_tick

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.lead_and_tick()
                self._last_tick = time.monotonic()
            except Exception:  # a bad tick (database away) must not end supervision
                log.exception("supervisor tick failed")
            self._wake.wait(self.settings.poll_interval_seconds)

    def lead_and_tick(self) -> None:
        """Tick if this instance holds the leader lock (taking it when it is free)."""
        leader = self.lock.hold()
        if leader and not self.leader:
            self._leader_since = utcnow()  # heartbeats missed while no one led do not count against a run
        self.leader = leader
        if leader:
            self.tick()

    def tick(self) -> None:
        for run in self.store.runs_in(LAUNCHED):
            try:
                self._follow(run)
            except Exception:  # one run's launcher trouble must not stall the others
                log.exception("run %s: cannot follow it this tick", run.id)
        active = len(self.store.runs_in(LAUNCHED))
        for run in self.store.runs_in([RunState.PENDING]):
            if active >= self.settings.max_active_runs:
                break
            self.start_attempt(run)
            active += 1

    def start_attempt(self, run: RunRow, reason: str | None = None) -> None:
        """Launch the run's next attempt with a fresh run token (the previous one stops working)."""
        launcher = self.launchers.get(run.launcher)
        if launcher is None:
            self._end(run, RunState.FAILED, f"launcher {run.launcher!r} is not enabled on this server")
            return
        token = new_token()
        try:
            run = self.store.transition(
                run.id, RunState.STARTING, expected={RunState(run.state)}, reason=reason,
                attempt=RunRow.attempt + 1, token_hash=hash_token(token),
                handle=None, started_at=utcnow(), rate_at=None, rate_step=None,
            )
        except Conflict:  # cancelled meanwhile
            return
        request = LaunchRequest(
            run_id=run.id, attempt=run.attempt, config=load_config(run), config_yaml=run.config_yaml,
            resources=Resources.model_validate(run.resources),
            env={ENV_URL: self._trainer_url(run), ENV_RUN_ID: run.id, ENV_TOKEN: token},
        )
        try:
            handle = launcher.launch(request)
        except Exception as err:  # whatever stops a launch fails this attempt with its reason, not the supervisor
            log.error("run %s: %s", run.id, err, exc_info=not isinstance(err, LaunchError))
            self._end(run, RunState.FAILED, f"attempt {run.attempt} could not start: {err}")
            return
        self.store.set_handle(run.id, handle)
        if self.store.get_run(run.id).state == RunState.CANCELLING.value:  # cancelled while launching
            launcher.stop(run.id, handle, force=False)

    def _trainer_url(self, run: RunRow) -> str:
        return self.settings.pod_trainer_url if run.launcher == "kubernetes" else self.settings.trainer_url

    def _follow(self, run: RunRow) -> None:
        launcher = self.launchers.get(run.launcher)
        if launcher is None:
            log.warning("run %s uses launcher %r, which is not enabled here: left as it is", run.id, run.launcher)
            return
        if run.handle is None:
            run = self._adopt(launcher, run)
        if run.handle is None:
            ending = RunState.CANCELLED if run.state == RunState.CANCELLING.value else RunState.FAILED
            self._end(run, ending, None if ending is RunState.CANCELLED else
                      f"the API stopped while launching attempt {run.attempt}")
            return
        status = launcher.status(run.id, run.handle)
        if status.running:
            if run.state == RunState.CANCELLING.value:
                if self._grace_over(run):
                    launcher.stop(run.id, run.handle, force=True)
            elif (silence := self._silence(run)) is not None:
                log.warning("run %s: %s; killing attempt %d", run.id, silence, run.attempt)
                self._stopped[(run.id, run.attempt)] = f"attempt {run.attempt} {silence}"
                launcher.stop(run.id, run.handle, force=True)
            return
        launcher.release(run.id, run.handle)
        killed_because = self._stopped.pop((run.id, run.attempt), None)
        if run.state == RunState.CANCELLING.value:
            self._end(run, RunState.CANCELLED, None)
        elif status.exit_code == 0:
            self._end(run, RunState.SUCCEEDED, None)
        else:
            reason = killed_because or self._failure(launcher, run, status)
            if run.attempt < run.max_attempts:
                log.warning("run %s: %s; relaunching", run.id, reason)
                self.start_attempt(run, reason=reason)
            else:
                self._end(run, RunState.FAILED, reason)

    def _adopt(self, launcher: Launcher, run: RunRow) -> RunRow:
        """An attempt launched before its handle reached the database (a crash or a database error in
        between): find it by what the launcher recorded first, and follow it (stop it if cancelled)."""
        handle = launcher.recover(run.id, run.attempt) if run.attempt else None
        if handle is None:
            return run
        log.warning("run %s: attempt %d was launched but its handle was never stored: adopting it", run.id,
                    run.attempt)
        self.store.set_handle(run.id, handle)
        if run.state == RunState.CANCELLING.value:
            launcher.stop(run.id, handle, force=False)
        return self.store.get_run(run.id)

    def _silence(self, run: RunRow) -> str | None:
        """Why a live attempt counts as lost: no first heartbeat within starting_timeout_seconds, or none
        for heartbeat_timeout_seconds since the last; None while it reports."""
        now = utcnow()
        if run.state == RunState.STARTING.value:
            since, limit, what = run.started_at, self.settings.starting_timeout_seconds, "starting_timeout_seconds"
        else:
            since = run.last_heartbeat_at or run.started_at
            limit, what = self.settings.heartbeat_timeout_seconds, "heartbeat_timeout_seconds"
        stamps = [t for t in (since, self._leader_since) if t is not None]
        silent = (now - max(stamps)).total_seconds() if stamps else 0.0
        if silent < limit:
            return None
        first = "sent no first heartbeat" if run.state == RunState.STARTING.value else "sent no heartbeat"
        return f"{first} for {silent:.0f} s ({what}={limit:g}): hung or lost"

    def _grace_over(self, run: RunRow) -> bool:
        requested = run.cancel_requested_at or run.updated_at
        return utcnow() - requested >= timedelta(seconds=self.settings.cancel_grace_seconds)

    @staticmethod
    def _failure(launcher: Launcher, run: RunRow, status: Status) -> str:
        what = status.detail or f"exit status {status.exit_code}"
        tail, _ = launcher.read_log(run.id, run.handle, -4096)
        line = last_line(tail)
        return f"attempt {run.attempt} failed: {what}" + (f"; last log line: {line}" if line else "")

    def _end(self, run: RunRow, state: RunState, reason: str | None) -> None:
        try:
            self.store.transition(run.id, state, expected={RunState(run.state)}, reason=reason)
            log.info("run %s %s%s", run.id, state.value, f": {reason}" if reason else "")
        except Conflict as err:  # another writer moved it first
            log.info("%s", err)


def load_config(run: RunRow) -> RunConfig:
    """The run's stored config (stored validated; validated again on the way out)."""
    return from_dict(yaml.safe_load(run.config_yaml))
