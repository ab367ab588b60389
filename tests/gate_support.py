"""Shared helpers for the review-gate tests: flows in threads, a reviewer that answers
through the Prefect API, settings for a fast gate."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prefect.states import State
from sqlalchemy import select

from flows.gate import add_gate_listener, remove_gate_listener
from galleryflow.db import ReviewRow, session_scope
from galleryflow.review.answer import OpenGate, wait_for_gate
from galleryflow.core.settings import Settings, get_settings, reset_settings

WAIT = 240.0  # seconds a step may take on a loaded 2-core machine before the test gives up


class FlowThread:
    """A flow run in its own thread, seeing the caller's Prefect settings (contextvars)."""

    def __init__(self, flow: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.state: State | None = None
        self.value: Any = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()
        self.thread = threading.Thread(
            target=context.run, args=(self._run, flow, args, kwargs), daemon=True,
            name=f"flow-{getattr(flow, 'name', 'flow')}",
        )
        self.thread.start()

    def _run(self, flow: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            self.state = flow(*args, return_state=True, **kwargs)
            # Read here: State.result() returns a coroutine in a thread with a running
            # event loop (the test's thread, when it drives a browser with playwright).
            self.value = self.state.result(raise_on_failure=False)
        except BaseException as exc:  # surfaced in the test's thread by finish()
            self.error = exc

    def finish(self, timeout: float = WAIT) -> State:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the flow run did not finish"
        if self.error is not None:
            raise self.error
        assert self.state is not None
        return self.state

    def result(self, timeout: float = WAIT) -> Any:
        """The flow's return value (its exception raised if the run failed)."""
        self.finish(timeout)
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


class Reviewer:
    """Learns of each gate as it opens (a gate listener) and answers it through the API."""

    def __init__(self) -> None:
        self.opened: queue.Queue[tuple[str, str, int]] = queue.Queue()
        self.keys: list[str] = []

    def __call__(self, flow_run_id: str | None, key: str, rows: int) -> None:
        if flow_run_id:
            self.opened.put((flow_run_id, key, rows))

    def next_gate(self, timeout: float = WAIT) -> OpenGate:
        flow_run_id, key, rows = self.opened.get(timeout=timeout)
        gate = wait_for_gate(flow_run_id, key=key, timeout=timeout, poll=0.2)
        assert gate is not None, f"run {flow_run_id} never paused at {key}"
        assert gate.key == key and len(gate.rows) == rows
        self.keys.append(key)
        return gate

    def nothing_more(self) -> bool:
        return self.opened.empty()


@pytest.fixture
def reviewer() -> Iterator[Reviewer]:
    listener = Reviewer()
    add_gate_listener(listener)
    yield listener
    remove_gate_listener(listener)


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Fresh settings from the environment: a fast gate, small web images."""
    values = {
        "GALLERYFLOW_REVIEW__POLL_INTERVAL_SECONDS": "1",
        "GALLERYFLOW_PUBLISH__FULL_LONG_EDGE": "480",
        "GALLERYFLOW_PUBLISH__THUMB_LONG_EDGE": "120",
        **env,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    settings = get_settings()
    settings.ensure_dirs()
    return settings


def offline(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """The offline captioner (no Ollama on a closed port): fastest stage 7 there is."""
    from tests.services import free_port

    return configure(monkeypatch, GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED="true",
                     GALLERYFLOW_OLLAMA__HOST=f"http://127.0.0.1:{free_port()}",
                     GALLERYFLOW_OLLAMA__CONNECT_TIMEOUT_SECONDS="1", **env)


def db_rows(**where: Any) -> dict[str, ReviewRow]:
    """Rows by original file name."""
    with session_scope() as session:
        query = select(ReviewRow)
        for column, value in where.items():
            query = query.where(getattr(ReviewRow, column) == value)
        return {r.original_name: r for r in session.scalars(query)}
