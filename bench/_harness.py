"""The set-up the in-process benches share: a fresh home run as a user's commands run it.

``open_home(home, chunk_size)`` points galleryflow at ``home`` (offline drafts: no
Ollama listens; the gate answered by an in-process approver, as ``--approve-all``
does), starts the home's background Prefect server (Prefect's temporary
per-process server when ``ops.local_server`` is off), runs one empty flow so
the server and the flow machinery are up before anything is timed, and makes the
home's database (what a user's first run does once; its time is printed). It returns the
``process-sets`` flow to call; ``close_home()`` stops the server.

``wait_warm(runtime, kind)`` and ``stop_warm(runtime)``: for the benches that time
commands as a user types them, the warm process (``galleryflow.app.warm``) the
first, cold command leaves in the bench's own runtime folder.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def open_home(home: Path, chunk_size: int) -> Callable[..., Any]:
    os.environ["GALLERYFLOW_HOME"] = str(home)
    # galleryflow points Prefect's result store and database at the home when it is first
    # imported (galleryflow.core.prefect_env). A bench that imported it before this (to make
    # its photos) kept the default home's, ./.galleryflow: one result cache shared by every
    # bench run, so a rerun on the same photos had its EXIF and scores served from the
    # cache while the reference did the work. Set here, for this home, whatever came first.
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "results")
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
        f"sqlite+aiosqlite:///{home / 'prefect' / 'prefect.db'}")
    os.environ["GALLERYFLOW_CHUNK_SIZE"] = str(chunk_size)
    os.environ["GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED"] = "true"
    os.environ["GALLERYFLOW_OLLAMA__HOST"] = "http://127.0.0.1:9"  # nothing listens: offline drafts
    os.environ["GALLERYFLOW_OLLAMA__CONNECT_TIMEOUT_SECONDS"] = "0.5"
    os.environ["GALLERYFLOW_REVIEW__POLL_INTERVAL_SECONDS"] = "0.5"

    import galleryflow  # noqa: F401
    from galleryflow.core.prefect_env import configure_prefect_env
    from galleryflow.core.settings import reset_settings

    configure_prefect_env()  # refreshes Prefect's settings when it was imported already
    reset_settings()
    from prefect.settings import get_current_settings

    if not str(get_current_settings().results.local_storage_path).startswith(str(home)):
        sys.exit(f"the bench's results would not be kept in its home {home}")
    from flows.gate import add_gate_listener
    from flows.process_sets import process_sets
    from galleryflow.app import local_server
    from galleryflow.review.answer import auto_approver
    from prefect import flow

    logging.getLogger("prefect").setLevel(logging.WARNING)
    local_server.use(start=True)

    @flow
    def warm_up() -> None:
        """Start the server and the flow machinery outside the timed runs."""

    warm_up()
    # The home's database as any run after a user's first leaves it: made once per home
    # (importing alembic and migrating: 0.1-0.3 s), which a 12-photo run would otherwise
    # count as if every run paid it. Said, not hidden.
    from galleryflow.db.engine import migrate

    started = time.perf_counter()
    migrate()
    print(f"the home's database made before the timed runs, as a first run leaves it: "
          f"{time.perf_counter() - started:.2f} s (once per home)", flush=True)
    add_gate_listener(auto_approver("bench"))
    return process_sets


def close_home() -> None:
    from galleryflow.app import local_server

    local_server.stop()  # the bench's home is thrown away


def wait_warm(runtime: Path, kind: str, timeout: float = 120.0) -> None:
    """Until the warm process of ``kind`` the cold command left in ``runtime`` answers."""
    from galleryflow.app.warm import answers

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(answers(path) for path in runtime.glob(f"{kind}-*.sock")):
            return
        time.sleep(0.1)
    sys.exit(f"no warm {kind} process answered in {runtime} (see its .log)")


def stop_warm(runtime: Path) -> None:
    """The warm processes in ``runtime`` stop once their socket is gone (checked every
    second)."""
    for path in runtime.glob("*.sock"):
        path.unlink()
    time.sleep(1.5)
