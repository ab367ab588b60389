"""Progress for long work: a Prefect progress artifact and, locally, a terminal bar.

A stage creates one :class:`StageProgress` and calls :meth:`advance` as images
finish (from any thread). Prefect sees a progress artifact, updated at most every
``min_interval`` seconds so a 10,000-image set does not flood the API. When the
CLI runs a flow in this process it registers a listener (a rich progress bar);
workers elsewhere simply have none.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
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
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._last_push = 0.0
        self._artifact_id: UUID | None = None
        # advance() is called from worker threads (Pillow pools) that do not carry
        # this run's context; without it Prefect would talk to another API (an
        # ephemeral server) when the API URL comes from a settings context.
        self._context = contextvars.copy_context()
        if _in_prefect_run():
            from prefect.artifacts import create_progress_artifact

            try:
                self._artifact_id = create_progress_artifact(
                    progress=0.0, key=key, description=f"{stage}: 0 of {self.total} images"
                )
            except Exception as exc:  # progress is never worth failing a run for
                _log.warning("could not create the %s progress artifact: %s", stage, exc)
        self._notify(0, self.total)

    def advance(self, count: int = 1) -> None:
        with self._lock:
            count = min(count, self.total - self.done)
            self.done += count
            now = time.monotonic()
            push = self.done == self.total or now - self._last_push >= self.min_interval
            if push:
                self._last_push = now
        if push:
            self._push()
        self._notify(count, 0)

    def _push(self) -> None:
        if self._artifact_id is None:
            return
        from prefect.artifacts import update_progress_artifact

        pct = 100.0 * self.done / self.total if self.total else 100.0
        try:
            self._context.copy().run(
                update_progress_artifact, self._artifact_id, progress=pct,
                description=f"{self.stage}: {self.done} of {self.total} images",
            )
        except Exception as exc:
            _log.warning("could not update the %s progress artifact: %s", self.stage, exc)

    def _notify(self, done: int, added: int) -> None:
        for listener in list(_listeners):
            listener(self.stage, done, added)
