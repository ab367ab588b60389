"""The background Prefect server kept per GALLERYFLOW_HOME (galleryflow.app.local_server):
one per home however many commands start at once, replaced when its versions are
not ours, stopped when idle. How commands share it is in test_demo_fresh_user.py."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from galleryflow.app import local_server
from galleryflow.core.settings import get_settings, reset_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(gf_home, monkeypatch):
    monkeypatch.setenv("GALLERYFLOW_OPS__LOCAL_SERVER", "true")
    reset_settings()
    settings = get_settings()
    yield settings
    local_server.stop(settings)


def test_commands_started_together_get_one_server_and_a_stale_one_is_replaced(settings):
    with ThreadPoolExecutor(3) as pool:
        states = list(pool.map(lambda _: local_server.ensure(settings), range(3)))
    assert len({s.owner for s in states}) == 1
    first = states[0]
    assert first.alive() and httpx.get(f"{first.url}/health", timeout=5).status_code == 200
    assert local_server.running(settings) == first

    # A server left by another Prefect version (an upgrade): stopped, a new one started.
    state_file = settings.home / "prefect" / "local-server.json"
    state_file.write_text(first.model_copy(update={"prefect_version": "0.0.1"}).model_dump_json())
    second = local_server.ensure(settings)
    assert second.owner != first.owner and second.alive()
    assert not first.alive()

    assert local_server.stop(settings) == second
    assert not second.alive() and not state_file.exists()
    assert local_server.stop(settings) is None  # nothing left to stop


def test_an_idle_server_stops_by_itself(settings, monkeypatch):
    monkeypatch.setenv("GALLERYFLOW_OPS__LOCAL_SERVER_IDLE_MINUTES", "0.05")  # 3 s
    reset_settings()
    state = local_server.ensure(get_settings())
    deadline = time.monotonic() + 30
    while state.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not state.alive()
    assert local_server.running(get_settings()) is None
    log = (get_settings().home / "logs" / "prefect-server.log").read_text()
    assert "idle for 0.05 min: stopping" in log


def test_a_configured_server_is_never_replaced(settings, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert local_server.use(settings) is None
    assert local_server.read_state(settings) is None


def test_a_refused_write_is_retried_at_once_not_after_two_seconds():
    """The server's 503 (SQLite refused a write for an instant) carries a short
    Retry-After, which Prefect's client honours instead of its 2 s back-off; other
    answers, and a 503 that already says when to retry, pass unchanged."""
    import asyncio

    from galleryflow.app.local_server import RETRY_AFTER_SECONDS, _QuickRetry

    def app_answering(status: int, headers: list[tuple[bytes, bytes]]):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
        return app

    async def call(app) -> dict:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        await _QuickRetry(app)({"type": "http"}, None, send)
        return dict(sent[0]["headers"])

    busy = asyncio.run(call(app_answering(503, [(b"content-type", b"application/json")])))
    assert busy[b"retry-after"] == RETRY_AFTER_SECONDS.encode()
    assert float(RETRY_AFTER_SECONDS) < 0.5
    told = asyncio.run(call(app_answering(503, [(b"Retry-After", b"7")])))
    assert told == {b"Retry-After": b"7"}
    fine = asyncio.run(call(app_answering(200, [(b"content-type", b"application/json")])))
    assert b"retry-after" not in fine
