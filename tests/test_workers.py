"""The process's shared pool for work inside chunks (galleryflow.core.workers)."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from galleryflow.core.workers import map_all


def test_chunks_side_by_side_share_one_bound_and_keep_their_order():
    running = 0
    most = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return i * i

    # Four chunks at once, as the flow's task runner runs them: three threads in all.
    with ThreadPoolExecutor(4) as chunks:
        results = list(chunks.map(lambda c: map_all(work, range(c * 10, c * 10 + 10), 3),
                                  range(4)))
    assert results == [[i * i for i in range(c * 10, c * 10 + 10)] for c in range(4)]
    assert most == 3


def test_a_failed_item_raises_only_after_every_item_has_finished():
    finished: list[int] = []

    def work(i: int) -> int:
        if i == 1:
            raise OSError("disk full: photo-1.jpg")
        time.sleep(0.05)
        finished.append(i)
        return i

    with pytest.raises(OSError, match="photo-1.jpg"):
        map_all(work, range(6), 2)
    # Nothing of the chunk is still writing when its failure reaches the rollback.
    assert sorted(finished) == [0, 2, 3, 4, 5]


def test_a_call_from_inside_the_pool_runs_in_its_thread_instead_of_deadlocking():
    def outer(i: int) -> list[int]:
        return map_all(lambda j: i + j, range(3), 1)

    assert map_all(outer, range(3), 1) == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_makes_its_own_pool():
    assert map_all(lambda i: i + 1, range(4), 2) == [1, 2, 3, 4]  # the parent's exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's threads are gone; a pool of its own answers
        try:
            ok = map_all(lambda i: i * 2, range(4), 2) == [0, 2, 4, 6]
            os.write(write, b"ok" if ok else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:  # the child waits for threads that did not survive the fork
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on its parent's pool")
    assert os.read(read, 16) == b"ok" and done[1] == 0
