"""The set-up the in-process benches share: a fresh home run as a user's commands run it.

``open_home(home, chunk_size)`` points galleryflow at ``home`` (offline drafts: no
Ollama listens; the gate answered by an in-process approver, as ``--approve-all``
does), loads what the warm run service preloads for a user's run, starts the
home's background Prefect server (Prefect's temporary per-process server when
``ops.local_server`` is off), runs one empty flow so
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
    from galleryflow.app.warm import load_for

    # What a user's warm `galleryflow run` child starts with (imports, SQLAlchemy's
    # mappers, the guardrails' data): without it the first timed run paid ~25 ms of
    # mapper set-up in its recovery step alone, which no user's run pays.
    load_for("run")
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
    import gc

    gc.freeze()  # as the warm service does after its preload (galleryflow.app.warm)
    return process_sets


def quiet_server(timeout: float = 15.0) -> float:
    """Wait until the home's background Prefect server has finished what the last run
    left it (recording its events and logs, its services' loops): under 5 ms of CPU in
    each of three 100-ms samples. Back-to-back runs otherwise meet the previous run's
    tail on a 2-core machine (12-photo runs read 1.02 s and 1.30 s by turns); a user's
    run starts on a quiet server. Returns the seconds waited (the benches print it)."""
    from galleryflow.app import local_server
    from galleryflow.core.settings import get_settings

    state = local_server.read_state(get_settings())
    if state is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{state.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    started = time.monotonic()
    quiet, last = 0, cpu()
    while quiet < 3 and time.monotonic() - started < timeout:
        time.sleep(0.1)
        now = cpu()
        quiet = quiet + 1 if now - last < 0.005 else 0
        last = now
    return time.monotonic() - started


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
