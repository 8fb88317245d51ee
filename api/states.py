"""The run life cycle: which state may follow which.

PENDING -> STARTING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, with CANCELLING before CANCELLED.
A failed attempt with attempts left goes back to STARTING; a run that never started can fail or be
cancelled directly. The store applies each transition as a compare-and-set against these sets.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
LAUNCHED = frozenset({RunState.STARTING, RunState.RUNNING, RunState.CANCELLING})
"""States in which a launcher holds processes or a job for the run."""

ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.STARTING, RunState.FAILED, RunState.CANCELLED}),
    RunState.STARTING: frozenset({RunState.STARTING, RunState.RUNNING, RunState.SUCCEEDED, RunState.FAILED,
                                  RunState.CANCELLING}),
    RunState.RUNNING: frozenset({RunState.STARTING, RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLING}),
    RunState.CANCELLING: frozenset({RunState.CANCELLED}),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
}


def sources_of(target: RunState) -> frozenset[RunState]:
    """The states from which `target` may be entered."""
    return frozenset(s for s, nexts in ALLOWED.items() if target in nexts)
