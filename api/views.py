"""Rows of the store as the API's public models."""

from __future__ import annotations

import yaml

from api.schemas import CheckpointPublic, Progress, Resources, RunPublic
from api.states import RunState
from api.store import CheckpointRow, RunRow


def checkpoint_public(row: CheckpointRow, best_id: str | None) -> CheckpointPublic:
    return CheckpointPublic(
        id=row.id, run_id=row.run_id, uri=row.uri, step=row.step, metrics=row.metrics, size_bytes=row.size_bytes,
        digest=row.digest, created_at=row.created_at, is_best=row.id == best_id, pinned=row.pinned,
        deleted_at=row.deleted_at, verification=row.verification,  # type: ignore[arg-type]  # stored from the Literal
    )


def eta_seconds(row: RunRow) -> float | None:
    """Remaining steps at the rate seen since the attempt's first heartbeat."""
    if None in (row.step, row.total_steps, row.rate_step, row.rate_at, row.last_heartbeat_at):
        return None
    done = row.step - row.rate_step  # type: ignore[operator]
    elapsed = (row.last_heartbeat_at - row.rate_at).total_seconds()  # type: ignore[operator]
    if done <= 0 or elapsed <= 0:
        return None
    return max(0, row.total_steps - row.step) * elapsed / done  # type: ignore[operator]


def run_public(row: RunRow, latest: CheckpointRow | None) -> RunPublic:
    progress = Progress(
        step=row.step, total_steps=row.total_steps, epoch=row.epoch, samples_per_sec=row.samples_per_sec,
        eta_seconds=eta_seconds(row), metrics=row.metrics or {}, last_heartbeat_at=row.last_heartbeat_at,
    )
    return RunPublic(
        id=row.id, name=row.name, state=RunState(row.state), reason=row.reason,
        launcher=row.launcher,  # type: ignore[arg-type]  # stored from a validated LauncherName
        resources=Resources.model_validate(row.resources), attempt=row.attempt, max_attempts=row.max_attempts,
        output_dir=row.output_dir, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, updated_at=row.updated_at, progress=progress,
        latest_checkpoint=None if latest is None else checkpoint_public(latest, row.best_checkpoint_id),
        best_checkpoint_id=row.best_checkpoint_id, config=yaml.safe_load(row.config_yaml),
        tracking=row.tracking or {},
    )
