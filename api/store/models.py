"""The tables: runs and their checkpoints (SQLAlchemy 2 ORM; migrations in migrations/versions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive and would lose the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    launcher: Mapped[str] = mapped_column(String(32))
    resources: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_yaml: Mapped[str] = mapped_column(Text)
    """The validated RunConfig the trainer gets, as YAML."""
    output_dir: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str | None] = mapped_column(String(64))
    """sha256 of the current attempt's run token; the token itself is never stored."""
    handle: Mapped[str | None] = mapped_column(Text)
    """The launcher's reference to the current attempt (process ids, job name)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    step: Mapped[int | None] = mapped_column(BigInteger)
    total_steps: Mapped[int | None] = mapped_column(BigInteger)
    epoch: Mapped[float | None] = mapped_column(Float)
    samples_per_sec: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, float | None]] = mapped_column(JSON, default=dict)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rate_step: Mapped[int | None] = mapped_column(BigInteger)
    """Step and time of the attempt's first heartbeat: the base of the ETA."""
    rate_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    best_checkpoint_id: Mapped[str | None] = mapped_column(String(32))
    tracking: Mapped[dict[str, str] | None] = mapped_column(JSON)
    """Tracker -> where it shows the run, as the trainer last reported it."""


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "uri", name="uq_checkpoints_run_uri"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    step: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, float | None]] = mapped_column(JSON, default=dict)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    """Kept by the trainer's pruning whatever keep_last says (as is the run's best)."""
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the trainer reported it pruned; a deleted checkpoint is no longer offered."""
    verification: Mapped[str] = mapped_column(String(16), default="pending")
    """The API's own check of the digest: pending, verified, mismatch, missing, or remote (not checked)."""
