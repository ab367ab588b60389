"""Shared fixtures: an isolated GALLERYFLOW_HOME per test, migrated databases,
real services (MariaDB; see tests/services), Prefect's test harness, sample sets."""

from __future__ import annotations

import os
import threading
import warnings
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

# Before anything imports prefect (galleryflow sets Prefect env defaults on import).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Task results (and so the content caches) of this test session: a private folder,
# not the working tree's .galleryflow/results.
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", __import__("tempfile").mkdtemp(prefix="gf-results-"))
# An embedded Prefect server started outside the harness keeps its database here,
# never in the working tree's .galleryflow/ (galleryflow's default) or ~/.prefect.
os.environ.setdefault(
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    f"sqlite+aiosqlite:///{__import__('tempfile').mkdtemp(prefix='gf-prefect-')}/prefect.db")

import galleryflow  # noqa: E402,F401
from galleryflow.db.engine import dispose_engines, migrate  # noqa: E402
from galleryflow.intake.samples import SampleSpec, write_sample  # noqa: E402
from galleryflow.core.settings import Settings, get_settings, reset_settings  # noqa: E402


@pytest.fixture(autouse=True)
def gf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Every test gets its own GALLERYFLOW_HOME (SQLite DB, incoming/, work/)."""
    home = tmp_path / "gfhome"
    monkeypatch.setenv("GALLERYFLOW_HOME", str(home))
    monkeypatch.setenv("GALLERYFLOW_CONFIG", str(tmp_path / "no-such-galleryflow.toml"))
    monkeypatch.delenv("GALLERYFLOW_DATABASE_URL", raising=False)
    # A slot that never frees fails the test inside pytest's timeout instead of hanging it.
    monkeypatch.setenv("GALLERYFLOW_OLLAMA__SLOT_WAIT_SECONDS", "90")
    reset_settings()
    settings = get_settings()
    settings.ensure_dirs()
    yield settings
    dispose_engines()
    reset_settings()


@pytest.fixture
def db(gf_home: Settings) -> str:
    """galleryflow's SQLite DB in the test's home, migrated to head."""
    migrate(gf_home.db_url)
    return gf_home.db_url


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[str]:
    from tests.services.mariadb import mariadb_server as server

    with server() as url:
        yield url


@pytest.fixture
def mariadb_url(mariadb_server: str) -> Iterator[str]:
    """A fresh, empty database on the test MariaDB server."""
    from tests.services.mariadb import fresh_database

    with fresh_database(mariadb_server) as url:
        yield url


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's own test harness: a temporary API server and database."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        _harness_up.set()
        try:
            yield
        finally:
            _harness_up.clear()


_harness_up = threading.Event()  # the session's harness is serving (see the slot check)


def make_set(root: Path, name: str, count: int, size: tuple[int, int] = (960, 640),
             start: datetime = datetime(2026, 6, 14, 9, 0), gps: bool = True) -> Path:
    """A small set of real, textured JPEGs with EXIF; fast enough for unit tests."""
    folder = root / name
    for i in range(count):
        spec = SampleSpec(
            name=f"{name}-{i + 1:02d}.jpg", width=size[0], height=size[1],
            taken_at=start + timedelta(minutes=30 * i), seed=zlib.crc32(f"{name}/{i}".encode()) % 10_000,
            gps=(46.5 + i * 0.01, 7.9, 1500.0) if gps and i % 2 == 0 else None,
        )
        write_sample(folder / spec.name, spec)
    return folder


@pytest.fixture
def sample_set(tmp_path: Path) -> Path:
    return make_set(tmp_path / "sets", "lake-shore", 4)


@pytest.fixture(scope="session")
def prefect_server_url() -> Iterator[str]:
    """A full Prefect server (scheduler, UI) on loopback; see tests/services/prefect_server.py."""
    from tests.services.prefect_server import prefect_server

    with prefect_server() as url:
        yield url


@pytest.fixture
def prefect_server_api(prefect_server_url: str) -> Iterator[str]:
    """Point this test's Prefect client at the full server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server_url}):
        yield prefect_server_url


# --- publish (issue 5): the OpenSSH SFTP server fixture --------------------------------
@pytest.fixture(scope="session")
def sftp_server():
    """A real OpenSSH SFTP server (``GALLERYFLOW_TEST_SFTP`` or a private sshd); see
    tests/services/sshd.py."""
    from tests.services.sshd import sftp_server as server

    with server() as running:
        yield running
# --- end publish fixtures ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leaked_concurrency_slots(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the Prefect harness, every global concurrency slot is free.

    The harness is an *ephemeral* Prefect server: it runs no Repossessor, so a slot
    whose lease was never released stays taken for the rest of the session and the
    next test that needs it would wait forever. Leaks are reported, then cleared."""
    yield
    if not _harness_up.is_set():  # a full server's Repossessor frees leases itself
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        held = [gcl for gcl in client.read_global_concurrency_limits(limit=200) if gcl.active_slots]
        for gcl in held:
            client.update_global_concurrency_limit(
                gcl.name, GlobalConcurrencyLimitUpdate(active_slots=0))
    if held:
        warnings.warn(f"{request.node.nodeid} left global concurrency slots taken: "
                      + ", ".join(f"{g.name}={g.active_slots}" for g in held), stacklevel=1)
