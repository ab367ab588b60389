"""One Prefect server per ``GALLERYFLOW_HOME``, kept between commands.

Without a configured Prefect server (no ``PREFECT_API_URL`` in the environment or
the active profile), Prefect starts a temporary server for every process that
runs a flow: 6–10 s before the first photo is looked at, on every
``galleryflow run``, and the Prefect UI is gone the moment the command ends —
so a person could never answer a gate there, nor run ``galleryflow review`` from a
second terminal.

Here the first command that runs a flow starts a server in the background (its
own session: it outlives the command, and a Ctrl-C in the terminal does not
reach it), records it in ``GALLERYFLOW_HOME/prefect/local-server.json``, and the
commands after it use it at once. The server keeps the database the temporary
server used (``GALLERYFLOW_HOME/prefect/prefect.db``, see
:mod:`galleryflow.core.prefect_env`), serves the Prefect UI, binds loopback only,
and stops by itself after ``ops.local_server_idle_minutes`` without a request or
an open connection (a running flow keeps its events connection open, so a long
quiet stage does not count as idle). ``galleryflow server stop`` stops it now; a
server of another Prefect or galleryflow version is stopped and replaced.

Set ``ops.local_server = false`` (``GALLERYFLOW_OPS__LOCAL_SERVER=false``) for
Prefect's own per-process server, as before.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock
from pydantic import BaseModel

from galleryflow.core.fsutil import atomic_write_text
from galleryflow.core.liveness import owner_alive, owner_of
from galleryflow.core.prefect_env import API_URL, active_profile_settings
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.tls import tls_context

STARTUP_SECONDS = 180.0  # its first start migrates the database: slow on a small machine


class LocalServer(BaseModel):
    """What ``local-server.json`` records."""

    pid: int
    owner: str  # host:pid:start-time (core.liveness): a reused pid is not this server
    url: str  # the API, ending in /api
    prefect_version: str
    galleryflow_version: str
    started: float

    def alive(self) -> bool:
        return owner_alive(self.owner) is True

    @property
    def ui_url(self) -> str:
        return self.url.removesuffix("/api")


class LocalServerError(RuntimeError):
    """The background server did not come up; the message says where its log is."""


def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    folder = settings.home / "prefect"
    return folder / "local-server.json", folder / "local-server.lock", settings.home / "logs" / "prefect-server.log"


def _versions() -> tuple[str, str]:
    from importlib.metadata import version

    import prefect

    return prefect.__version__, version("galleryflow")


def user_server_configured() -> bool:
    """Whether the user chose a Prefect server (env or active profile)."""
    return bool(os.environ.get(API_URL) or active_profile_settings().get(API_URL))


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout, verify=tls_context()).status_code == 200
    except httpx.HTTPError:
        return False


def read_state(settings: Settings) -> LocalServer | None:
    state_file, _, _ = _paths(settings)
    try:
        return LocalServer.model_validate_json(state_file.read_text())
    except (OSError, ValueError):
        return None


def running(settings: Settings) -> LocalServer | None:
    """The recorded server, if its process is alive and answers."""
    state = read_state(settings)
    if state is None or not state.alive() or not _healthy(state.url):
        return None
    return state


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(owner: str, wait: float = 10.0) -> None:
    """SIGTERM (uvicorn shuts down cleanly), SIGKILL after ``wait``; only the process
    ``owner`` names, never another that got its pid."""
    if owner_alive(owner) is not True:
        return
    pid = int(owner.rsplit(":", 2)[1])
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while owner_alive(owner) is True and time.monotonic() < deadline:
            time.sleep(0.05)
        if owner_alive(owner) is True:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _start(settings: Settings) -> LocalServer:
    state_file, _, log_file = _paths(settings)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != API_URL}
    env["GALLERYFLOW_HOME"] = str(settings.home)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "galleryflow.app.local_server", "--port", str(port),
             "--idle-minutes", str(settings.ops.local_server_idle_minutes)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # outlives this command; the terminal's Ctrl-C is not its
        )
    owner = owner_of(process.pid)
    deadline = time.monotonic() + STARTUP_SECONDS
    while not _healthy(url, timeout=0.5):
        if process.poll() is not None:
            raise LocalServerError(f"the background Prefect server exited ({process.returncode}) "
                                   f"before it answered; see {log_file}")
        if time.monotonic() > deadline:
            _stop(owner)
            raise LocalServerError(f"the background Prefect server did not answer within "
                                   f"{STARTUP_SECONDS:.0f} s; see {log_file}")
        time.sleep(0.05)
    prefect_version, galleryflow_version = _versions()
    state = LocalServer(pid=process.pid, owner=owner, url=url, prefect_version=prefect_version,
                        galleryflow_version=galleryflow_version, started=time.time())
    atomic_write_text(state_file, state.model_dump_json(indent=2))
    return state


def ensure(settings: Settings | None = None) -> LocalServer:
    """The running server of this home, started when there is none (or one of
    other versions, which is stopped first). Safe for commands started at once:
    one starts it, the others wait for it under the lock."""
    settings = settings or get_settings()
    state_file, lock_file, _ = _paths(settings)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file), timeout=STARTUP_SECONDS + 30):
        state = read_state(settings)
        if state is not None and (state.prefect_version, state.galleryflow_version) != _versions():
            _stop(state.owner)
            state = None
        if state is not None and state.alive() and _healthy(state.url):
            return state
        if state is not None:
            # Alive but not answering: a stuck server holds the database; replace it.
            _stop(state.owner)
        return _start(settings)


def use(settings: Settings | None = None, start: bool = True) -> LocalServer | None:
    """Point this process's Prefect client at the home's server (starting it when
    ``start``); None, and nothing changed, when the user configured a server,
    the setting is off, or (``start=False``) none is running."""
    settings = settings or get_settings()
    if user_server_configured() or not settings.ops.local_server:
        return None
    state = ensure(settings) if start else running(settings)
    if state is None:
        return None
    os.environ[API_URL] = state.url
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    return state


def stop(settings: Settings | None = None) -> LocalServer | None:
    """Stop the home's server; what was stopped (None: none was running)."""
    settings = settings or get_settings()
    state_file, lock_file, _ = _paths(settings)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file), timeout=60):
        state = read_state(settings)
        if state is None:
            return None
        alive = state.alive()
        _stop(state.owner)
        state_file.unlink(missing_ok=True)
        return state if alive else None


# ------------------------------------------------------------------ the server process


class _Activity:
    """ASGI middleware: when the last request ended, and how many are open now
    (a websocket counts as open for as long as it is connected)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.open = 0
        self.last = time.monotonic()
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.open -= 1
                self.last = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self.open else time.monotonic() - self.last


# What the server tells a client to wait before retrying a request SQLite refused
# for a moment (a 503: "database is locked"); the client adds its own jitter.
RETRY_AFTER_SECONDS = "0.05"


class _QuickRetry:
    """ASGI middleware: a 503 without a ``Retry-After`` header gets a short one.

    Why: the server answers 503 when SQLite refuses a write for an instant
    (SQLITE_BUSY_SNAPSHOT: a transaction that read before another writer
    committed — the task run recorder writes every state while tasks run — cannot
    be upgraded, and waiting in SQLite's busy handler does not help). Prefect's
    client retries a 503 after ``2 ** attempt`` seconds unless the answer says how
    long to wait, so every such collision idled a run for ~2 s: measured on the
    slot request of each chunk of the scoring, publish and Ollama limits (a
    concurrency slot acquired right after the previous one was released: 0.1 s,
    then 1.8–2.2 s for each one after). A retry a few milliseconds later succeeds.
    Only this server's answers are changed; the client's own retry count and
    back-off for other errors stay as Prefect sets them.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_retry_after(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 503:
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"retry-after" for name, _ in headers):
                    headers.append((b"retry-after", RETRY_AFTER_SECONDS.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)


def serve(port: int, idle_minutes: float) -> None:
    """Run the Prefect API and UI on 127.0.0.1:``port`` until idle or SIGTERM."""
    import uvicorn
    from prefect.server.api.server import create_app

    activity = _Activity(_QuickRetry(create_app(final=True)))
    config = uvicorn.Config(activity, host="127.0.0.1", port=port, log_level="error",
                            lifespan="on", timeout_keep_alive=60)
    server = uvicorn.Server(config)

    tick = min(5.0, idle_minutes * 30)

    def watchdog() -> None:
        while not server.should_exit:
            time.sleep(tick)
            if activity.idle_for() > idle_minutes * 60:
                print(f"idle for {idle_minutes:g} min: stopping", flush=True)
                server.should_exit = True

    threading.Thread(target=watchdog, name="idle-watchdog", daemon=True).start()
    server.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="galleryflow's background Prefect server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-minutes", type=float, default=30.0)
    args = parser.parse_args(argv)
    serve(args.port, args.idle_minutes)


if __name__ == "__main__":
    main()
