"""A real Prefect server for tests that need its services (scheduler, UI, workers).

``GALLERYFLOW_TEST_PREFECT_API_URL`` names a running server; otherwise the
fixture starts ``prefect server start`` from this virtualenv on a free loopback
port, with its own ``PREFECT_HOME`` and SQLite database, the scheduler looping
every second, and tears it down afterwards. Prefect's own ``prefect_test_harness``
(the ``prefect_api`` fixture) is lighter and enough for flow tests; this one is
for what only a full server does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.services import free_port, stop_process, unavailable

ENV_URL = "GALLERYFLOW_TEST_PREFECT_API_URL"


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def prefect_server() -> Iterator[str]:
    url = os.environ.get(ENV_URL)
    if url:
        if not _healthy(url):
            unavailable(f"{ENV_URL}={url} does not answer /health")
        yield url.rstrip("/")
        return
    prefect = Path(sys.executable).with_name("prefect")
    if not prefect.exists():
        unavailable(f"no prefect executable beside {sys.executable}")
    home = Path(tempfile.mkdtemp(prefix="gf-prefect-"))
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_UI_ENABLED": "true",
        # The UI is served from this port; tell it where its API is (default :4200).
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)  # the old name would compete
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(api_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("Prefect server did not start:\n" + (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield api_url
    finally:
        stop_process(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)
