"""An ordered, bounded parallel map over worker processes that survives a worker's death.

Results come back in input order, so a conversion's output does not depend on scheduling (reruns and
resumes give the same shards). At most a few batches per worker are in flight, so a fast reader (for
example a tar stream whose records carry their image bytes) cannot fill memory ahead of the workers.

A worker that dies (SIGKILL, the OOM killer, a crash inside a decoder) breaks the whole pool: every batch
in flight fails with it. Those batches are retried once, each alone in a fresh pool, so that the one
that kills its worker again is known; its payloads get `crashed(payload)` as their results and the map
goes on with the others.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import TypeVar

C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)

_IN_FLIGHT_PER_WORKER = 4


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class _Pool:
    """A spawned ProcessPoolExecutor that is replaced when a worker's death breaks it."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def restart(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._start()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _done(value: R) -> Future[R]:
    future: Future[R] = Future()
    future.set_result(value)
    return future


def ordered_map(
    fn: Callable[[list[T]], list[R]], tasks: Iterable[tuple[C, T]], workers: int, batch_size: int,
    crashed: Callable[[T], R],
) -> Iterator[tuple[C, R]]:
    """For each (context, payload) task, in input order, yield (context, fn's result for the payload).

    fn maps a batch of payloads to one result each; only payloads travel to the workers, contexts
    stay here. workers <= 1 runs fn in this process. Otherwise fn must be picklable (a module-level
    function or a functools.partial of one); workers are spawned, not forked, because the caller may
    hold threads (shard uploads) and locks that a fork would copy in a locked state. A batch whose worker
    dies twice gets crashed(payload) for each payload.
    """
    batches = batched(tasks, batch_size)
    if workers <= 1:
        for batch in batches:
            yield from _pair(batch, fn([payload for _, payload in batch]))
        return
    pool = _Pool(workers)
    pending: deque[tuple[list[tuple[C, T]], Future[list[R]]]] = deque()

    def next_done() -> Iterator[tuple[C, R]]:
        batch, future = pending[0]
        try:
            results = future.result()
        except BrokenProcessPool:
            _recover(fn, pool, pending, crashed)
            batch, future = pending[0]
            results = future.result()
        pending.popleft()
        return _pair(batch, results)

    try:
        for batch in batches:
            pending.append((batch, pool.executor.submit(fn, [payload for _, payload in batch])))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                yield from next_done()
        while pending:
            yield from next_done()
    finally:
        pool.close()


def _recover(fn: Callable[[list[T]], list[R]], pool: _Pool, pending: deque[tuple[list[tuple[C, T]], Future[list[R]]]],
             crashed: Callable[[T], R]) -> None:
    """Resolve every batch the broken pool held: its result if it had one, else a retry alone in a fresh pool,
    else (its worker died again) crashed() for each payload."""
    logger.warning("a worker process died; retrying the %d batches in flight one at a time", len(pending))
    pool.restart()
    for position, (batch, future) in enumerate(pending):
        if future.done() and not future.cancelled() and future.exception() is None:
            continue  # finished before the pool broke
        payloads = [payload for _, payload in batch]
        try:
            results = pool.executor.submit(fn, payloads).result()
        except BrokenProcessPool:
            logger.error("a worker died again on a batch of %d records: they are rejected", len(payloads))
            pool.restart()
            results = [crashed(payload) for payload in payloads]
        pending[position] = (batch, _done(results))


def _pair(batch: list[tuple[C, T]], results: list[R]) -> Iterator[tuple[C, R]]:
    return ((context, result) for (context, _), result in zip(batch, results, strict=True))
