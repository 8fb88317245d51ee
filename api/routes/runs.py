"""/v1/runs: start, list, inspect and cancel runs; the trainer's heartbeats; run logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from api.admission import AdmissionError, admit
from api.deps import Operator, Reader, RunId, RunTokenHash, ServicesDep, SettingsDep, StoreDep
from api.launchers.base import Launcher, ResourceError
from api.run_config import build_run_config
from api.schemas import Heartbeat, HeartbeatReply, RunCreate, RunList, RunPublic, error_responses
from api.security import PathNotAllowed
from api.states import RunState
from api.store import Conflict, RunRow, StaleToken, Store, new_id
from api.store.models import utcnow
from api.views import run_public
from trainer.config import ConfigError, dump

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=error_responses(400, 401, 404, 409, 413, 422))

FOLLOW_POLL_SECONDS = 0.5
TAIL_BYTES_PER_LINE = 512


def _public(store: Store, row: RunRow) -> RunPublic:
    return run_public(row, store.latest_checkpoint(row.id))


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Operator])
def create_run(body: RunCreate, services: ServicesDep, settings: SettingsDep) -> RunPublic:
    """Validate the config with the trainer's models and queue the run (PENDING); it launches as soon as
    fewer than max_active_runs are launched."""
    launcher = services.launchers.get(body.launcher)
    if launcher is None:
        enabled = ", ".join(services.launchers)
        raise HTTPException(422, f"launcher {body.launcher!r} is not enabled here (enabled: {enabled})")
    if body.max_attempts > settings.max_attempts:
        raise HTTPException(422, f"max_attempts {body.max_attempts} exceeds this server's limit"
                                 f" {settings.max_attempts}")
    run_id = new_id()
    try:
        config = build_run_config(body.config, settings, launcher.placement(run_id))
        launcher.check(run_id, config, body.resources)
        admit(config, body.resources, body.launcher, settings)
    except (ConfigError, PathNotAllowed, ResourceError, AdmissionError) as err:
        raise HTTPException(422, str(err)) from None
    row = services.store.create_run(
        run_id=run_id, name=config.name, launcher=body.launcher, resources=body.resources.model_dump(),
        config_yaml=dump(config), output_dir=config.output_dir, max_attempts=body.max_attempts,
    )
    log.info("run %s (%s) queued for the %s launcher", row.id, row.name, row.launcher)
    services.supervisor.wake()
    return run_public(row, None)


@router.get("", dependencies=[Reader])
def list_runs(
    store: StoreDep,
    state: RunState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> RunList:
    """Runs, newest first, optionally only those in one state."""
    rows, total = store.list_runs(state=state, limit=limit, offset=offset)
    return RunList(items=[_public(store, row) for row in rows], total=total, limit=limit, offset=offset)


@router.get("/{run_id}", dependencies=[Reader])
def get_run(run_id: RunId, store: StoreDep) -> RunPublic:
    return _public(store, store.get_run(run_id))


@router.post("/{run_id}/cancel", dependencies=[Operator])
def cancel_run(run_id: RunId, services: ServicesDep) -> RunPublic:
    """A queued run is cancelled at once; a launched one gets SIGTERM (or its job is deleted) and is killed
    if it has not stopped after cancel_grace_seconds."""
    store = services.store
    run = store.get_run(run_id)
    if run.state == RunState.PENDING.value:
        try:
            return _public(store, store.transition(run_id, RunState.CANCELLED, expected={RunState.PENDING},
                                                   reason="cancelled before launch"))
        except Conflict:  # launched meanwhile: cancel it as a launched run
            run = store.get_run(run_id)
    try:
        run = store.transition(run_id, RunState.CANCELLING, reason="cancelled by request", cancel_requested_at=utcnow())
    except Conflict as err:
        raise HTTPException(409, str(err)) from None
    launcher = services.launchers.get(run.launcher)
    if launcher is not None and run.handle is not None:
        launcher.stop(run.id, run.handle, force=False)
    services.supervisor.wake()
    return _public(store, run)


@router.post("/{run_id}/heartbeat")
def heartbeat(run_id: RunId, beat: Heartbeat, store: StoreDep, token_hash: RunTokenHash) -> HeartbeatReply:
    """The trainer's progress report (run token). The first one moves the run to RUNNING. The reply's
    `cancel_requested` tells the trainer to checkpoint and stop (the SIGTERM that follows may be lost)."""
    try:
        run = store.record_heartbeat(run_id, beat, token_hash)
    except StaleToken as err:
        raise HTTPException(401, str(err), headers={"WWW-Authenticate": 'Bearer realm="tcl", error="invalid_token"'}
                            ) from None
    except Conflict as err:
        raise HTTPException(409, str(err)) from None
    return HeartbeatReply(state=RunState(run.state), cancel_requested=run.state == RunState.CANCELLING.value)


def _tail(data: bytes, lines: int, whole: bool) -> bytes:
    """The last `lines` complete lines of a chunk (the first line is partial unless the chunk is the whole log)."""
    parts = data.splitlines(keepends=True)
    if not whole and parts:
        parts = parts[1:]
    return b"".join(parts[-lines:]) if lines else b""


async def _follow(launcher: Launcher, store: Store, run_id: str, offset: int) -> AsyncIterator[bytes]:
    """New log bytes as they are written, until the run has ended and everything is sent."""
    while True:
        run = await run_in_threadpool(store.get_run, run_id)
        ended = RunState(run.state).terminal
        chunk, offset = await run_in_threadpool(launcher.read_log, run_id, run.handle, offset)
        if chunk:
            yield chunk
        elif ended:
            return
        else:
            await asyncio.sleep(FOLLOW_POLL_SECONDS)


@router.get("/{run_id}/logs", dependencies=[Reader], response_class=PlainTextResponse, response_model=None,
            responses={200: {"content": {"text/plain": {}}}})
def run_logs(
    run_id: RunId, services: ServicesDep,
    tail: Annotated[int, Query(ge=0, le=10_000, description="Lines from the end of the log.")] = 100,
    follow: Annotated[bool, Query(description="Keep streaming new lines until the run ends.")] = False,
) -> PlainTextResponse | StreamingResponse:
    """The run's log (all attempts): the last `tail` lines, then with `follow` a stream of what follows."""
    run = services.store.get_run(run_id)
    launcher = services.launchers.get(run.launcher)
    if launcher is None:
        raise HTTPException(409, f"launcher {run.launcher!r} is not enabled here: its logs cannot be read")
    want = max(1, min(tail * TAIL_BYTES_PER_LINE, 4 << 20))  # at least one byte, to learn where the log ends
    chunk, end = launcher.read_log(run_id, run.handle, -want, limit=want)
    text = _tail(chunk, tail, whole=len(chunk) == end)
    if not follow:
        return PlainTextResponse(text)

    async def stream() -> AsyncIterator[bytes]:
        yield text
        async for part in _follow(launcher, services.store, run_id, end):
            yield part

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")
