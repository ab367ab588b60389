"""One pool of threads per process for the file and Pillow work inside chunks.

A stage's chunks run side by side on the flow's task runner (four at a time), and
each chunk used to open a pool of its own of ``settings.threads`` (2 × cores): four
chunks of intake ran sixteen threads on two cores and took 1.4× as long as one
chunk of the same 500 small photos on four (4.3 s against 3.0 s), the threads only
taking turns on the GIL and the disk. Chunks now hand their items to this pool, so
the work of all of them together runs on ``settings.threads`` threads.

:func:`map_all` keeps what a pool per chunk gave: every item of the call has
finished before it returns or raises, so a failed chunk leaves no copy still being
written behind it when the session's rollback starts. A call made from one of the
pool's own threads runs its items in that thread (waiting on the pool from inside
it could deadlock). A forked child starts without the parent's pool (its threads
did not survive the fork) and makes its own. Its threads are not daemons: the
interpreter's exit stops them, and a quick exit calls :func:`shutdown` first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["map_all", "shutdown"]

T = TypeVar("T")
R = TypeVar("R")

_PREFIX = "galleryflow-work"
_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}  # by thread count: one in practice (settings.threads)


def _shared(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` threads, made on first use."""
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix=f"{_PREFIX}-{threads}")
        return pool


def _forget() -> None:
    global _lock
    _pools.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget)


def shutdown() -> None:
    """Let the pools finish what they were given, and their threads end.

    The interpreter's own exit does this for every pool; a caller that ends the
    process otherwise (the console script's quick exit, :func:`galleryflow.app.cli.
    run_app`, which waits for non-daemon threads first) calls it, or waits forever
    for idle workers."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True)


def map_all(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``fn`` of each item on the shared pool of ``threads`` threads, results in the
    items' order. Returns or raises only when every item has finished; raises the
    first failure in the items' order."""
    todo = list(items)
    if len(todo) <= 1 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(item) for item in todo]
    pool = _shared(max(1, threads))
    futures = [pool.submit(fn, item) for item in todo]
    wait(futures)
    return [future.result() for future in futures]
