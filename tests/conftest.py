"""Test session setup: Prefect's environment before anything imports prefect, then
the fixtures, which live in tests/fixtures/ (one plugin per kind of thing they
provide; see its __init__) and reach every test without an import."""

from __future__ import annotations

import os
import tempfile

# Before anything imports prefect (galleryflow sets Prefect env defaults on import).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Task results (and so the content caches) of this test session: a private folder,
# not the working tree's .galleryflow/results.
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", tempfile.mkdtemp(prefix="gf-results-"))
# An embedded Prefect server started outside the harness keeps its database here,
# never in the working tree's .galleryflow/ (galleryflow's default) or ~/.prefect.
os.environ.setdefault(
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='gf-prefect-')}/prefect.db")

import galleryflow  # noqa: E402,F401  (Prefect env defaults, before the plugins import prefect)

# Imported by pytest after this module has run, in this order (the services' autouse
# slot check first, then the isolated home, as when both were defined here).
pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.home",
    "tests.fixtures.photos",
    "tests.fixtures.rows",
    "tests.fixtures.ollama",
    "tests.fixtures.review",
    "tests.fixtures.weights",
    "tests.fixtures.crash",
    "tests.fixtures.site",
]
