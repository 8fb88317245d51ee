"""Persistence of runs and checkpoints; every state change is a compare-and-set.

A transition is one `UPDATE ... WHERE id = :id AND state IN (:allowed sources)`: of two racing
writers (a cancel and the supervisor, or two API replicas) exactly one wins, the other gets Conflict.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, case, create_engine, event, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import CheckpointCreate, Heartbeat
from api.states import LAUNCHED, RunState, sources_of
from api.store.models import CheckpointRow, RunRow, utcnow

MIGRATIONS = Path(__file__).parent / "migrations"
Row = TypeVar("Row", RunRow, CheckpointRow)


class NotFound(LookupError):
    """No run or checkpoint with that id."""


class Conflict(Exception):
    """The row is not in a state that allows the change; the message says which state it is in."""


class StaleToken(Conflict):
    """The caller's run token is no longer the current attempt's."""


def new_id() -> str:
    return uuid.uuid4().hex


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _private_file(path: str) -> None:
    """The SQLite file readable by the API's user only (its journal and WAL files take the same mode):
    trainers running under other users must not read the registry nor write it."""
    if path and path != ":memory:":
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)


def make_engine(url: str) -> Engine:
    """An engine for SQLite (shared across the API's threads) or PostgreSQL."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _private_file(engine.url.database or "")
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema with the packaged Alembic migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def _compare_and_set(session: Session, run_id: str, states: Iterable[RunState], values: dict[str, Any],
                     refusal: str, *where: Any) -> None:
    """Update the run only if it is in one of `states` (and matches `where`); else NotFound, or Conflict
    naming its state."""
    result = session.execute(
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.state.in_([s.value for s in states]), *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = session.get(RunRow, run_id)
        if current is None:
            raise NotFound(f"no run {run_id}")
        raise Conflict(f"run {run_id} is {current.state}{refusal}")


class Store:
    """Runs and checkpoints behind short transactions; returned rows are detached snapshots."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # runs

    def create_run(
        self, *, name: str, launcher: str, resources: dict[str, Any], config_yaml: str, output_dir: str,
        max_attempts: int, run_id: str | None = None,
    ) -> RunRow:
        now = utcnow()
        row = RunRow(
            id=run_id or new_id(), name=name, state=RunState.PENDING.value, launcher=launcher, resources=resources,
            config_yaml=config_yaml, output_dir=output_dir, attempt=0, max_attempts=max_attempts, metrics={},
            created_at=now, updated_at=now,
        )
        with self._session() as session:
            session.add(row)
        return row

    def _get(self, model: type[Row], key: str, what: str) -> Row:
        with self._session() as session:
            row = session.get(model, key)
            if row is None:
                raise NotFound(f"no {what} {key}")
            return row

    def get_run(self, run_id: str) -> RunRow:
        return self._get(RunRow, run_id, "run")

    def list_runs(self, *, state: RunState | None = None, limit: int = 50, offset: int = 0) -> tuple[list[RunRow], int]:
        """A page of runs, newest first, and the total count of the filter."""
        where = [] if state is None else [RunRow.state == state.value]
        with self._session() as session:
            total = session.scalar(select(func.count()).select_from(RunRow).where(*where)) or 0
            rows = session.scalars(
                select(RunRow).where(*where).order_by(RunRow.created_at.desc(), RunRow.id).limit(limit).offset(offset)
            ).all()
            return list(rows), total

    def runs_in(self, states: Iterable[RunState]) -> list[RunRow]:
        """Runs in these states, oldest first (the launch queue order)."""
        with self._session() as session:
            query = select(RunRow).where(RunRow.state.in_([s.value for s in states])).order_by(RunRow.created_at)
            return list(session.scalars(query).all())

    def state_counts(self) -> dict[RunState, int]:
        with self._session() as session:
            counts = dict(session.execute(select(RunRow.state, func.count()).group_by(RunRow.state)).all())
        return {state: counts.get(state.value, 0) for state in RunState}

    def transition(self, run_id: str, target: RunState, *, expected: Iterable[RunState] | None = None,
                   reason: str | None = None, **values: Any) -> RunRow:
        """Move a run to `target` if its current state allows it and is one of `expected` (the state the
        caller saw, so that of two callers acting on the same observation only one acts); `values` are
        set in the same UPDATE."""
        sources = sources_of(target) if expected is None else sources_of(target) & set(expected)
        values = {"state": target.value, "updated_at": utcnow(), **values}
        if reason is not None:
            values["reason"] = reason[:2000]
        if target.terminal:
            values["finished_at"] = values["updated_at"]
        with self._session() as session:
            _compare_and_set(session, run_id, sources, values, f"; it cannot become {target.value}")
        return self.get_run(run_id)

    def set_handle(self, run_id: str, handle: str) -> None:
        with self._session() as session:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(handle=handle, updated_at=utcnow()))

    def record_heartbeat(self, run_id: str, beat: Heartbeat, token_hash: str) -> RunRow:
        """Store progress of the attempt whose token hashes to `token_hash`; the first heartbeat of an attempt
        moves STARTING to RUNNING. The token is checked in the same statements that write: a late heartbeat
        of a replaced attempt changes nothing (StaleToken), even when it raced the relaunch."""
        now = utcnow()
        with self._session() as session:
            session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.state == RunState.STARTING.value, RunRow.token_hash == token_hash)
                .values(state=RunState.RUNNING.value)
            )
            progress = {
                "step": beat.step, "total_steps": beat.total_steps, "epoch": beat.epoch,
                "samples_per_sec": beat.samples_per_sec, "metrics": dict(beat.metrics), "last_heartbeat_at": now,
                "updated_at": now,
                "rate_step": case((RunRow.rate_at.is_(None), beat.step), else_=RunRow.rate_step),
                "rate_at": func.coalesce(RunRow.rate_at, now),
            }
            if beat.tracking is not None:
                progress["tracking"] = dict(beat.tracking)
            try:
                _compare_and_set(session, run_id, {RunState.RUNNING, RunState.CANCELLING}, progress,
                                 ": it takes no heartbeats", RunRow.token_hash == token_hash)
            except Conflict:
                current = session.get(RunRow, run_id)
                if current is not None and current.token_hash != token_hash:
                    raise StaleToken(f"run {run_id}: that token belongs to a replaced attempt") from None
                raise
        return self.get_run(run_id)

    # checkpoints

    def add_checkpoint(self, run_id: str, new: CheckpointCreate) -> tuple[CheckpointRow, bool]:
        """Register a checkpoint; registering the same uri and digest again returns the first record.
        Returns (record, created)."""
        run = self.get_run(run_id)
        if RunState(run.state) not in LAUNCHED:
            raise Conflict(f"run {run_id} is {run.state}: it registers no checkpoints")
        row = CheckpointRow(
            id=new_id(), run_id=run_id, uri=new.uri, step=new.step, metrics=dict(new.metrics),
            size_bytes=new.size_bytes, digest=new.digest, created_at=utcnow(), pinned=False,
            verification="pending" if new.uri.startswith("file://") else "remote",
        )
        try:
            with self._session() as session:
                session.add(row)
            return row, True
        except IntegrityError:
            existing = self._checkpoint_at(run_id, new.uri)
            if existing is None:
                raise
            if (existing.digest, existing.step, existing.size_bytes) != (new.digest, new.step, new.size_bytes):
                raise Conflict(f"checkpoint {new.uri} is already registered with another digest,"
                               " step or size") from None
            return existing, False

    def _checkpoint_at(self, run_id: str, uri: str) -> CheckpointRow | None:
        with self._session() as session:
            return session.scalar(select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.uri == uri))

    def get_checkpoint(self, checkpoint_id: str) -> CheckpointRow:
        return self._get(CheckpointRow, checkpoint_id, "checkpoint")

    def list_checkpoints(self, run_id: str, *, limit: int = 100, offset: int = 0,
                         include_deleted: bool = False) -> tuple[list[CheckpointRow], int]:
        """A page of the run's checkpoints by step (then registration order), and the total count; pruned
        ones only with include_deleted."""
        self.get_run(run_id)
        where = [CheckpointRow.run_id == run_id] + ([] if include_deleted else [CheckpointRow.deleted_at.is_(None)])
        with self._session() as session:
            total = session.scalar(select(func.count()).select_from(CheckpointRow).where(*where)) or 0
            query = select(CheckpointRow).where(*where).order_by(CheckpointRow.step, CheckpointRow.created_at)
            return list(session.scalars(query.limit(limit).offset(offset)).all()), total

    def latest_checkpoint(self, run_id: str) -> CheckpointRow | None:
        """The newest checkpoint that still exists."""
        with self._session() as session:
            query = select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.deleted_at.is_(None))
            return session.scalar(query.order_by(CheckpointRow.step.desc(), CheckpointRow.created_at.desc()).limit(1))

    def set_pinned(self, checkpoint_id: str, pinned: bool) -> CheckpointRow:
        """Pin (or unpin) a checkpoint: a pinned one is kept by the trainer's pruning."""
        with self._session() as session:
            row = session.get(CheckpointRow, checkpoint_id)
            if row is None:
                raise NotFound(f"no checkpoint {checkpoint_id}")
            if row.deleted_at is not None and pinned:
                raise Conflict(f"checkpoint {checkpoint_id} was pruned at {row.deleted_at.isoformat()}: nothing to pin")
            row.pinned = pinned
            return row

    def kept_uris(self, run_id: str) -> list[str]:
        """URIs the trainer's pruning must keep: the run's best and its pinned checkpoints, not yet deleted."""
        best = self.get_run(run_id).best_checkpoint_id
        with self._session() as session:
            kept = CheckpointRow.pinned.is_(True) | (CheckpointRow.id == best)
            query = select(CheckpointRow.uri).where(CheckpointRow.run_id == run_id, CheckpointRow.deleted_at.is_(None),
                                                    kept)
            return sorted(session.scalars(query).all())

    def mark_deleted(self, run_id: str, uris: list[str]) -> list[str]:
        """Record that the trainer pruned these checkpoints; returns the URIs that were registered and live."""
        self.get_run(run_id)
        with self._session() as session:
            rows = session.scalars(select(CheckpointRow).where(
                CheckpointRow.run_id == run_id, CheckpointRow.uri.in_(uris), CheckpointRow.deleted_at.is_(None))).all()
            now = utcnow()
            for row in rows:
                row.deleted_at = now
            return sorted(row.uri for row in rows)

    def pending_verifications(self, limit: int = 16) -> list[CheckpointRow]:
        """Checkpoints whose digest the API has not checked yet, oldest first."""
        with self._session() as session:
            query = select(CheckpointRow).where(CheckpointRow.verification == "pending",
                                                CheckpointRow.deleted_at.is_(None))
            return list(session.scalars(query.order_by(CheckpointRow.created_at).limit(limit)).all())

    def set_verification(self, checkpoint_id: str, result: str) -> None:
        with self._session() as session:
            session.execute(update(CheckpointRow).where(CheckpointRow.id == checkpoint_id)
                            .values(verification=result))

    def mark_best(self, checkpoint_id: str) -> CheckpointRow:
        """Make this checkpoint its run's best (replacing any previous choice)."""
        checkpoint = self.get_checkpoint(checkpoint_id)
        if checkpoint.deleted_at is not None:
            raise Conflict(f"checkpoint {checkpoint_id} was pruned: it cannot be the best")
        with self._session() as session:
            session.execute(
                update(RunRow).where(RunRow.id == checkpoint.run_id)
                .values(best_checkpoint_id=checkpoint.id, updated_at=utcnow())
            )
        return checkpoint

    def checkpoint_summary(self, run_ids: list[str]) -> dict[str, tuple[int, datetime]]:
        """run id -> (checkpoints registered, time of the last one) for runs that have any."""
        if not run_ids:
            return {}
        with self._session() as session:
            rows = session.execute(
                select(CheckpointRow.run_id, func.count(), func.max(CheckpointRow.created_at))
                .where(CheckpointRow.run_id.in_(run_ids)).group_by(CheckpointRow.run_id)
            ).all()  # every registration counts (a counter), pruned ones too
        return {run_id: (count, last) for run_id, count, last in rows}

    def runs_for_metrics(self, finished_since: datetime) -> list[RunRow]:
        """Runs still going, and those that finished after `finished_since`."""
        with self._session() as session:
            query = select(RunRow).where(
                RunRow.state.in_([s.value for s in RunState if not s.terminal]) | (RunRow.finished_at >= finished_since)
            )
            return list(session.scalars(query).all())
