"""A flow's end does not wait for Prefect's heartbeat thread, and heartbeats still go out.

Prefect's sync engine joined its heartbeat thread, which sleeps in 1-s steps, at the
end of every flow run (up to 1 s after the last task). ``flows`` makes the engine leave
the thread to stop by itself, as Prefect's async engine does
(:func:`galleryflow.core.prefect_run.end_heartbeats_without_waiting`).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from prefect import flow, flow_engine

import flows  # noqa: F401 - importing the flows applies it
from galleryflow.core.prefect_run import end_heartbeats_without_waiting


class _Engine:
    """What Prefect's heartbeat helper reads of a flow engine."""

    heartbeat_seconds = 30

    def __init__(self) -> None:
        self.sent = threading.Semaphore(0)
        self.count = 0
        self.flow_run = SimpleNamespace(state=None)
        self.logger = SimpleNamespace(debug=lambda *a, **k: None)

    def _build_heartbeat_event_template(self):
        return {}, []

    def _emit_flow_run_heartbeat(self, resource, related) -> None:
        self.count += 1
        self.sent.release()


def test_the_heartbeat_thread_is_left_to_stop_by_itself_and_sends_no_more() -> None:
    assert end_heartbeats_without_waiting()
    assert end_heartbeats_without_waiting()  # idempotent: wrapped once
    engine = _Engine()
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):
        assert engine.sent.acquire(timeout=10)  # the first heartbeat goes out at the start
        (heartbeat,) = set(threading.enumerate()) - before
    # Not joined: the thread is still in its 1-s sleep as the flow's end returns.
    assert heartbeat.is_alive()
    heartbeat.join(timeout=5)
    assert not heartbeat.is_alive()  # it stopped by itself …
    assert engine.count == 1  # … without another heartbeat


@pytest.mark.usefixtures("prefect_api")
def test_a_flow_run_goes_through_the_helper_that_does_not_wait(monkeypatch) -> None:
    """The engine still calls its heartbeat helper by that name (a Prefect that stops
    doing so would make the wrapping a silent no-op)."""
    calls: list[bool] = []
    wrapped = flow_engine._send_heartbeats

    def spy(engine, join_on_exit: bool = True):
        calls.append(join_on_exit)
        return wrapped(engine, join_on_exit)

    monkeypatch.setattr(flow_engine, "_send_heartbeats", spy)

    @flow
    def tiny() -> int:
        return 7

    assert tiny() == 7
    assert calls, "the flow engine no longer calls prefect.flow_engine._send_heartbeats"
