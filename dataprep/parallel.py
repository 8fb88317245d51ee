"""An ordered, bounded parallel map over worker processes.

Results come back in input order, so a conversion's output does not depend on scheduling (reruns and
resumes give the same shards). At most a few batches per worker are in flight, so a fast reader (for
example a tar stream whose records carry their image bytes) cannot fill memory ahead of the workers.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import TypeVar

C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")

_IN_FLIGHT_PER_WORKER = 4


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def ordered_map(
    fn: Callable[[list[T]], list[R]], tasks: Iterable[tuple[C, T]], workers: int, batch_size: int
) -> Iterator[tuple[C, R]]:
    """For each (context, payload) task, in input order, yield (context, fn's result for the payload).

    fn maps a batch of payloads to one result each; only payloads travel to the workers, contexts
    stay here. workers <= 1 runs fn in this process. Otherwise fn must be picklable (a module-level
    function or a functools.partial of one); workers are spawned, not forked, because the caller may
    hold threads (shard uploads) and locks that a fork would copy in a locked state.
    """
    batches = batched(tasks, batch_size)
    if workers <= 1:
        for batch in batches:
            yield from _pair(batch, fn([payload for _, payload in batch]))
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[tuple[list[tuple[C, T]], Future[list[R]]]] = deque()
    try:
        for batch in batches:
            pending.append((batch, pool.submit(fn, [payload for _, payload in batch])))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                done, future = pending.popleft()
                yield from _pair(done, future.result())
        while pending:
            done, future = pending.popleft()
            yield from _pair(done, future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pair(batch: list[tuple[C, T]], results: list[R]) -> Iterator[tuple[C, R]]:
    return ((context, result) for (context, _), result in zip(batch, results, strict=True))
