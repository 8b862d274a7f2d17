"""How many threads to use, and an ordered map over a thread pool: shared by the encoder and
the decoder (numpy and the numba kernels release the GIL on large arrays)."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), the default thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


MAX_THREADS = 1024


def resolve(threads: int | None) -> int:
    """``threads`` checked (1 to MAX_THREADS), or every available core for None."""
    if threads is None:
        return available_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        from .errors import OptionError

        raise OptionError(f"threads must be an integer in [1, {MAX_THREADS}], got {threads!r}")
    return threads


@contextlib.contextmanager
def pool_map(workers: int, name: str) -> Iterator[Callable[[Callable, Iterable], Iterable]]:
    """``ThreadPoolExecutor.map`` of a pool of ``workers`` threads (at least one): it takes its
    items as they come and runs them on the pool, results in order."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix=name)
    try:
        yield pool.map
    except BaseException:  # on a failure, what has not started yet never will
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str, ahead: int = 2) -> Iterator[R]:
    """``map(fn, items)`` computed on ``workers`` pool threads (in the caller's thread for 0),
    results in the items' order, at most ``ahead`` items per worker in flight, so that a huge
    model's tensors are not all read or prepared ahead."""
    if workers <= 0:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # on a failure, what has not started yet never will
        pool.shutdown(wait=True, cancel_futures=True)
