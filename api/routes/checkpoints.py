"""The checkpoint registry: the trainer registers complete checkpoints and reports the ones it prunes, after
asking which to keep; operators list them, pin them and pick the best."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from api.deps import CheckpointId, Operator, Reader, RunId, RunOrOperator, StoreDep
from api.schemas import (
    CheckpointCreate,
    CheckpointList,
    CheckpointPublic,
    DeletedCheckpoints,
    KeptCheckpoints,
    error_responses,
)
from api.security import checkpoint_uri_outside
from api.store import Conflict, NotFound, Store
from api.store.models import CheckpointRow
from api.views import checkpoint_public

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["checkpoints"], responses=error_responses(400, 401, 404, 409, 413, 422))


@router.post("/runs/{run_id}/checkpoints", status_code=status.HTTP_201_CREATED, dependencies=[RunOrOperator],
             responses={200: {"model": CheckpointPublic, "description": "Already registered (same digest)."}})
def register_checkpoint(run_id: RunId, body: CheckpointCreate, store: StoreDep, response: Response) -> CheckpointPublic:
    """Register a completely written checkpoint, under the run's own output location. Registering it again
    (a retried request) is harmless; the same uri with another digest is a 409. The API then checks the
    digest of a file:// checkpoint against its files in the background (`verification`)."""
    outside = checkpoint_uri_outside(body.uri, store.get_run(run_id).output_dir)
    if outside:
        raise HTTPException(422, outside)
    try:
        row, created = store.add_checkpoint(run_id, body)
    except Conflict as err:
        raise HTTPException(409, str(err)) from None
    if created:
        log.info("run %s: checkpoint at step %d registered (%s)", run_id, row.step, row.uri)
    else:
        response.status_code = status.HTTP_200_OK
    return checkpoint_public(row, store.get_run(run_id).best_checkpoint_id)


@router.get("/runs/{run_id}/checkpoints", dependencies=[Reader])
def list_checkpoints(
    run_id: RunId, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    include_deleted: Annotated[bool, Query(description="Also the checkpoints the trainer pruned.")] = False,
) -> CheckpointList:
    """A page of the run's checkpoints by step."""
    best = store.get_run(run_id).best_checkpoint_id
    rows, total = store.list_checkpoints(run_id, limit=limit, offset=offset, include_deleted=include_deleted)
    return CheckpointList(items=[checkpoint_public(row, best) for row in rows], total=total, limit=limit,
                          offset=offset)


@router.get("/runs/{run_id}/checkpoints/kept", dependencies=[RunOrOperator])
def kept_checkpoints(run_id: RunId, store: StoreDep) -> KeptCheckpoints:
    """What the trainer's keep_last pruning must not delete (run token): the best and the pinned ones."""
    return KeptCheckpoints(uris=store.kept_uris(run_id))


@router.post("/runs/{run_id}/checkpoints/deleted", dependencies=[RunOrOperator])
def checkpoints_deleted(run_id: RunId, body: DeletedCheckpoints, store: StoreDep) -> DeletedCheckpoints:
    """The trainer pruned these (run token): they are no longer listed as available. Returns those that
    were registered and live."""
    kept = set(store.kept_uris(run_id)) & set(body.uris)
    if kept:
        log.warning("run %s: the trainer deleted checkpoints the registry keeps: %s", run_id, ", ".join(sorted(kept)))
    return DeletedCheckpoints(uris=store.mark_deleted(run_id, body.uris))


def _of_run(store: Store, run_id: str, checkpoint_id: str) -> CheckpointRow:
    row = store.get_checkpoint(checkpoint_id)
    if row.run_id != run_id:
        raise NotFound(f"run {run_id} has no checkpoint {checkpoint_id}")
    return row


@router.post("/runs/{run_id}/checkpoints/{checkpoint_id}/pin", dependencies=[Operator])
def pin_checkpoint(run_id: RunId, checkpoint_id: CheckpointId, store: StoreDep) -> CheckpointPublic:
    """Keep this checkpoint whatever keep_last says (the trainer asks before it prunes)."""
    _of_run(store, run_id, checkpoint_id)
    try:
        row = store.set_pinned(checkpoint_id, True)
    except Conflict as err:
        raise HTTPException(409, str(err)) from None
    return checkpoint_public(row, store.get_run(run_id).best_checkpoint_id)


@router.delete("/runs/{run_id}/checkpoints/{checkpoint_id}/pin", dependencies=[Operator])
def unpin_checkpoint(run_id: RunId, checkpoint_id: CheckpointId, store: StoreDep) -> CheckpointPublic:
    """Let keep_last prune this checkpoint again (unless it is the best)."""
    _of_run(store, run_id, checkpoint_id)
    row = store.set_pinned(checkpoint_id, False)
    return checkpoint_public(row, store.get_run(run_id).best_checkpoint_id)


@router.get("/checkpoints/{checkpoint_id}", dependencies=[Reader])
def get_checkpoint(checkpoint_id: CheckpointId, store: StoreDep) -> CheckpointPublic:
    row = store.get_checkpoint(checkpoint_id)
    return checkpoint_public(row, store.get_run(row.run_id).best_checkpoint_id)


@router.post("/checkpoints/{checkpoint_id}/best", dependencies=[Operator])
def mark_best(checkpoint_id: CheckpointId, store: StoreDep) -> CheckpointPublic:
    """Make this checkpoint its run's best (the previous best loses the mark); the best is kept by pruning."""
    try:
        row = store.mark_best(checkpoint_id)
    except Conflict as err:
        raise HTTPException(409, str(err)) from None
    return checkpoint_public(row, row.id)
