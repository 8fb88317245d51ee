"""The checkpoint registry: the trainer registers complete checkpoints; operators list them and pick the best."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Response, status

from api.deps import CheckpointId, Operator, Reader, RunId, RunOrOperator, StoreDep
from api.schemas import CheckpointCreate, CheckpointList, CheckpointPublic, error_responses
from api.store import Conflict
from api.views import checkpoint_public

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["checkpoints"], responses=error_responses(400, 401, 404, 409, 413, 422))


@router.post("/runs/{run_id}/checkpoints", status_code=status.HTTP_201_CREATED, dependencies=[RunOrOperator],
             responses={200: {"model": CheckpointPublic, "description": "Already registered (same digest)."}})
def register_checkpoint(run_id: RunId, body: CheckpointCreate, store: StoreDep, response: Response) -> CheckpointPublic:
    """Register a completely written checkpoint. Registering it again (a retried request) is harmless;
    the same uri with another digest is a 409."""
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
def list_checkpoints(run_id: RunId, store: StoreDep) -> CheckpointList:
    """The run's checkpoints by step."""
    best = store.get_run(run_id).best_checkpoint_id
    return CheckpointList(items=[checkpoint_public(row, best) for row in store.list_checkpoints(run_id)])


@router.get("/checkpoints/{checkpoint_id}", dependencies=[Reader])
def get_checkpoint(checkpoint_id: CheckpointId, store: StoreDep) -> CheckpointPublic:
    row = store.get_checkpoint(checkpoint_id)
    return checkpoint_public(row, store.get_run(row.run_id).best_checkpoint_id)


@router.post("/checkpoints/{checkpoint_id}/best", dependencies=[Operator])
def mark_best(checkpoint_id: CheckpointId, store: StoreDep) -> CheckpointPublic:
    """Make this checkpoint its run's best (the previous best loses the mark)."""
    row = store.mark_best(checkpoint_id)
    return checkpoint_public(row, row.id)
