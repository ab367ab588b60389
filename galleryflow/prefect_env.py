"""Prefect defaults that must be in the environment before ``import prefect``.

Prefect 3 reads ``PREFECT_*`` settings at import time. galleryflow only fills in
values the user has not chosen:

- a generous start-up timeout for the embedded (ephemeral) server, whose first
  start runs its own migrations and can take well over Prefect's default on a
  small machine;
- analytics off;
- task results persisted under ``GALLERYFLOW_HOME/results``, so task caching
  works across runs (Prefect's default keeps results in memory only).
"""

from __future__ import annotations

import os
from pathlib import Path

_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


def configure_prefect_env() -> None:
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    home = Path(os.environ.get("GALLERYFLOW_HOME", ".galleryflow")).expanduser().resolve()
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(home / "results"))
