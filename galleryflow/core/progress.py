"""Progress for long work: a Prefect progress artifact and, locally, a terminal bar.

A stage creates one :class:`StageProgress` and calls :meth:`advance` as images
finish (from any thread). Prefect sees a progress artifact, updated at most every
``min_interval`` seconds so a 10,000-image set does not flood the API. When the
CLI runs a flow in this process it registers a listener (a rich progress bar);
workers elsewhere simply have none.

The artifact is created and updated by one background thread per process
(:class:`_Pusher`), never by the stage: each request is a round trip to the server
(13-20 ms on a loaded 2-core machine), and made by the stage it held a Pillow worker
or a chunk's own thread (a stage of 12 photos waited ~45 ms for its three). Updates
that pile up while one is in flight are sent as one, the latest. A flow calls
:func:`flush` before it returns, so its artifacts are final when it ends.

A flow's one-off reports (the validation table, the per-file outcomes) go the same
way (:func:`send_later`): made on the flow's own thread, each held the next stage
back for a round trip (validation's table: ~25 ms before a 12-photo set's intake).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from uuid import UUID

# (stage, newly done, newly added to the total): deltas, because a stage runs as
# several chunks, each with its own StageProgress, and a bar shows their sum.
Listener = Callable[[str, int, int], None]

_listeners: list[Listener] = []
_log = logging.getLogger(__name__)


def add_listener(listener: Listener) -> None:
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class StageProgress:
    def __init__(self, stage: str, total: int, key: str | None = None, min_interval: float = 1.0):
        self.stage = stage
        self.total = max(total, 0)
        self.done = 0
        self.key = key
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._last_push = 0.0
        self._artifact_id: UUID | None = None
        self._failed = False  # the artifact could not be created: no more attempts
        # The pusher (and advance() from worker threads, Pillow pools) do not carry this
        # run's context; without it Prefect would talk to another API (an ephemeral
        # server) when the API URL comes from a settings context.
        self._context = contextvars.copy_context()
        self._tracked = _in_prefect_run()
        if self._tracked:
            _pusher().submit(self)  # created there, with whatever is done by then
        self._notify(0, self.total)

    def advance(self, count: int = 1) -> None:
        with self._lock:
            count = min(count, self.total - self.done)
            self.done += count
            now = time.monotonic()
            push = self.done == self.total or now - self._last_push >= self.min_interval
            if push:
                self._last_push = now
        if push and self._tracked:
            _pusher().submit(self)
        self._notify(count, 0)

    def _description(self, done: int) -> str:
        return f"{self.stage}: {done} of {self.total} images"

    def _push(self) -> None:
        """Create or update the artifact with the progress now (the pusher's thread)."""
        if self._failed:
            return
        with self._lock:
            done = self.done
        pct = 100.0 * done / self.total if self.total else 100.0
        if self._artifact_id is None:
            from prefect.artifacts import create_progress_artifact

            try:
                self._artifact_id = self._context.copy().run(
                    create_progress_artifact, progress=pct, key=self.key,
                    description=self._description(done))
            except Exception as exc:  # progress is never worth failing a run for
                self._failed = True
                _log.warning("could not create the %s progress artifact: %s", self.stage, exc)
            return
        from prefect.artifacts import update_progress_artifact

        try:
            self._context.copy().run(update_progress_artifact, self._artifact_id, progress=pct,
                                     description=self._description(done))
        except Exception as exc:
            _log.warning("could not update the %s progress artifact: %s", self.stage, exc)

    def _notify(self, done: int, added: int) -> None:
        for listener in list(_listeners):
            listener(self.stage, done, added)


class _Report:
    """One report to send once (an artifact's creation), in the context it was asked in."""

    def __init__(self, what: str, send: Callable[[], object]) -> None:
        self.what = what
        self._send = send
        self._context = contextvars.copy_context()  # the run the artifact belongs to

    def _push(self) -> None:
        try:
            self._context.run(self._send)
        except Exception as exc:  # a report is never worth failing a run for
            _log.warning("could not send the %s: %s", self.what, exc)


def send_later(what: str, send: Callable[[], object]) -> None:
    """Call ``send`` (the creation of an artifact of this run, ``what`` naming it for
    a warning) on the pusher's thread, in this context, after what was asked before;
    the flow's :func:`flush` waits for it. Outside a Prefect run: called here, now."""
    if not _in_prefect_run():
        send()
        return
    _pusher().submit(_Report(what, send))


class _Pusher:
    """The one thread of a process that sends progress (and one-off reports) to
    Prefect: started with the first thing to send, ending when there is none (a later
    one starts another)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # An ordered set: first asked, first sent.
        self._pending: dict[StageProgress | _Report, None] = {}
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, progress: StageProgress | _Report) -> None:
        with self._cond:
            self._pending.setdefault(progress)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="progress-pusher",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._busy = False
                    self._thread = None
                    self._cond.notify_all()
                    return
                progress = next(iter(self._pending))
                del self._pending[progress]
                self._busy = True
            progress._push()
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until everything asked so far is sent; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


_the_pusher: _Pusher | None = None
_pusher_lock = threading.Lock()


def _pusher() -> _Pusher:
    global _the_pusher
    with _pusher_lock:
        if _the_pusher is None:
            _the_pusher = _Pusher()
        return _the_pusher


def _forget_pusher() -> None:
    """A forked child (a warm process's command) starts with no thread of its parent's."""
    global _the_pusher, _pusher_lock
    _the_pusher, _pusher_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pusher)


def flush(timeout: float = 10.0) -> None:
    """Send every progress update asked so far before returning (a flow's last step, so
    that the artifacts it leaves say where it ended); gives up after ``timeout``."""
    if _the_pusher is not None and not _the_pusher.flush(timeout):
        _log.warning("progress artifacts still being sent after %.0f s; not waiting longer",
                     timeout)


P = ParamSpec("P")
R = TypeVar("R")


def flushed(fn: Callable[P, R]) -> Callable[P, R]:
    """A flow body (under ``@flow``) that returns, or raises, only once its progress
    artifacts and reports say where it ended (:func:`flush`) and the concurrency-limit
    checks it started are done (they use the run's client, closed as the flow ends)."""

    @functools.wraps(fn)
    def body(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            flush()
            from galleryflow.core.prefect_run import settle_limit_checks

            settle_limit_checks()

    return body
