"""The store on SQLite and on a real PostgreSQL: migrations, compare-and-set transitions, checkpoints."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from api.schemas import CheckpointCreate, Heartbeat
from api.states import ALLOWED, RunState
from api.store import Conflict, NotFound, RunRow, Store
from api.store.models import Base
from api.views import eta_seconds

TOKEN_HASH = "7" * 64
"""The current attempt's token hash of every run new_run makes."""


def new_run(store: Store, state: RunState = RunState.PENDING, **values: Any) -> RunRow:
    run = store.create_run(name="r", launcher="local", resources={"nodes": 1, "procs_per_node": 1, "gpus_per_proc": 0},
                           config_yaml="name: r\n", output_dir="/runs/r", max_attempts=1)
    # put it there directly, bypassing the rules under test
    with store.engine.begin() as connection:
        connection.execute(update(RunRow).where(RunRow.id == run.id).values(
            state=state.value, **{"token_hash": TOKEN_HASH, **values}))
    return store.get_run(run.id)


def checkpoint(uri: str, step: int, digest: str = "a" * 64, size: int = 10) -> CheckpointCreate:
    return CheckpointCreate(uri=uri, step=step, metrics={"loss": 1.0, "diverged": None}, size_bytes=size, digest=digest)


def test_migrations_create_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert MigrationContext.configure(connection).get_current_revision() == "0003"


@pytest.mark.parametrize("source", list(RunState))
def test_a_transition_succeeds_exactly_when_the_table_allows_it(store: Store, source: RunState) -> None:
    for target in RunState:
        run = new_run(store, source)
        if target in ALLOWED[source]:
            moved = store.transition(run.id, target, reason="why")
            assert moved.state == target.value and moved.reason == "why"
            assert (moved.finished_at is not None) == target.terminal
        else:
            with pytest.raises(Conflict, match=f"is {source.value}; it cannot become {target.value}"):
                store.transition(run.id, target)
            assert store.get_run(run.id).state == source.value  # unchanged


def test_racing_writers_have_exactly_one_winner(store: Store) -> None:
    run = new_run(store)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def contend(target: RunState) -> None:
        barrier.wait()
        try:
            store.transition(run.id, target, expected={RunState.PENDING})  # all acting on the same observation
            outcomes.append(target.value)
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=contend, args=(RunState.STARTING if i % 2 else RunState.CANCELLED,))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1 and store.get_run(run.id).state == winners[0]


def test_expected_state_narrows_the_allowed_sources(store: Store) -> None:
    run = new_run(store, RunState.STARTING)
    with pytest.raises(Conflict):
        store.transition(run.id, RunState.STARTING, expected={RunState.PENDING})
    assert store.transition(run.id, RunState.STARTING, expected={RunState.STARTING}, attempt=2).attempt == 2


def test_unknown_runs_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_run("0" * 32)
    with pytest.raises(NotFound):
        store.transition("0" * 32, RunState.STARTING)
    with pytest.raises(NotFound):
        store.record_heartbeat("0" * 32, Heartbeat(step=1), TOKEN_HASH)


def test_first_heartbeat_starts_the_run_and_fixes_the_rate_base(store: Store) -> None:
    run = new_run(store, RunState.STARTING)
    beat = Heartbeat(step=5, total_steps=50, metrics={"loss": 3.0, "itm": None})
    first = store.record_heartbeat(run.id, beat, TOKEN_HASH)
    assert first.state == "RUNNING" and first.step == 5 and first.rate_step == 5
    assert first.metrics == {"loss": 3.0, "itm": None}
    later = store.record_heartbeat(run.id, Heartbeat(step=9, total_steps=50, samples_per_sec=12.5), TOKEN_HASH)
    assert later.step == 9 and later.samples_per_sec == 12.5 and later.rate_step == 5
    assert later.rate_at == first.rate_at and later.last_heartbeat_at >= first.last_heartbeat_at
    assert later.rate_at.tzinfo is not None and later.rate_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("state", [RunState.PENDING, RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED])
def test_heartbeats_of_runs_not_launched_are_refused(store: Store, state: RunState) -> None:
    run = new_run(store, state)
    with pytest.raises(Conflict, match="takes no heartbeats"):
        store.record_heartbeat(run.id, Heartbeat(step=1), TOKEN_HASH)
    assert store.get_run(run.id).step is None


def test_a_cancelling_run_still_reports_progress(store: Store) -> None:
    run = new_run(store, RunState.CANCELLING)
    assert store.record_heartbeat(run.id, Heartbeat(step=3), TOKEN_HASH).state == "CANCELLING"


def test_eta_from_the_rate_since_the_first_heartbeat() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    row = RunRow(step=30, total_steps=100, rate_step=10, rate_at=t0, last_heartbeat_at=t0 + timedelta(seconds=40))
    assert eta_seconds(row) == pytest.approx(70 * 40 / 20)  # 70 steps left at 0.5 step/s
    row.step = 10  # no progress since the base: no rate yet
    assert eta_seconds(row) is None


def test_checkpoint_registration_is_idempotent_and_conflicts_are_refused(store: Store) -> None:
    run = new_run(store, RunState.RUNNING)
    first, created = store.add_checkpoint(run.id, checkpoint("file:///c/3", 3))
    again, created_again = store.add_checkpoint(run.id, checkpoint("file:///c/3", 3))
    assert created and not created_again and again.id == first.id
    assert again.metrics == {"loss": 1.0, "diverged": None}
    with pytest.raises(Conflict, match="another digest"):
        store.add_checkpoint(run.id, checkpoint("file:///c/3", 3, digest="b" * 64))
    assert [c.id for c in store.list_checkpoints(run.id)[0]] == [first.id]


def test_checkpoints_by_step_latest_and_best(store: Store) -> None:
    run = new_run(store, RunState.RUNNING)
    other = new_run(store, RunState.RUNNING)
    ids = {step: store.add_checkpoint(run.id, checkpoint(f"file:///c/{step}", step))[0].id for step in (6, 3, 9)}
    store.add_checkpoint(other.id, checkpoint("file:///c/3", 3))  # same uri, other run: its own record
    assert [c.step for c in store.list_checkpoints(run.id)[0]] == [3, 6, 9]
    assert store.latest_checkpoint(run.id).id == ids[9]
    assert store.checkpoint_summary([run.id, other.id])[run.id][0] == 3
    store.mark_best(ids[6])
    assert store.get_run(run.id).best_checkpoint_id == ids[6]
    store.mark_best(ids[3])
    assert store.get_run(run.id).best_checkpoint_id == ids[3]
    assert store.get_run(other.id).best_checkpoint_id is None
    with pytest.raises(NotFound):
        store.mark_best("f" * 32)


@pytest.mark.parametrize("state", [RunState.PENDING, RunState.SUCCEEDED])
def test_runs_not_launched_register_no_checkpoints(store: Store, state: RunState) -> None:
    run = new_run(store, state)
    with pytest.raises(Conflict, match="registers no checkpoints"):
        store.add_checkpoint(run.id, checkpoint("file:///c/1", 1))


def test_listing_filters_pages_and_counts(store: Store) -> None:
    states = [RunState.RUNNING, RunState.RUNNING, RunState.FAILED, RunState.PENDING, RunState.RUNNING]
    created = [new_run(store, s).id for s in states]
    running, total = store.list_runs(state=RunState.RUNNING, limit=2, offset=0)
    assert total == 3 and len(running) == 2
    rest, _ = store.list_runs(state=RunState.RUNNING, limit=2, offset=2)
    newest_first = [i for i, s in zip(created, states, strict=True) if s is RunState.RUNNING][::-1]
    assert [r.id for r in running + rest] == newest_first
    assert store.state_counts() == {s: states.count(s) for s in RunState}
    assert [r.id for r in store.runs_in([RunState.PENDING, RunState.FAILED])] == [created[2], created[3]]


def test_metrics_include_live_and_recently_finished_runs(store: Store) -> None:
    now = datetime.now(UTC)
    live = new_run(store, RunState.RUNNING)
    recent = new_run(store, RunState.SUCCEEDED, finished_at=now - timedelta(minutes=5))
    new_run(store, RunState.FAILED, finished_at=now - timedelta(hours=3))
    chosen = {r.id for r in store.runs_for_metrics(now - timedelta(hours=1))}
    assert chosen == {live.id, recent.id}
