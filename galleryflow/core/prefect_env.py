"""Prefect defaults galleryflow fills in where the user has chosen none.

Prefect 3 reads ``PREFECT_*`` settings when it is first imported. Importing
``galleryflow`` calls :func:`configure_prefect_env`, which puts the defaults in the
environment and, when Prefect was imported first, has Prefect read its settings
again (``prefect.context.refresh_global_settings_context``, Prefect's own way to
pick up environment changes) — so the order of the two imports changes nothing.
The defaults:

- a generous start-up timeout for the embedded (ephemeral) server, whose first
  start runs its own migrations and can take well over Prefect's default on a
  small machine;
- analytics off;
- the server keeps idle HTTP connections open for 60 s. Prefect's client pools
  them for 25 s (``keepalive_expiry``), uvicorn closes them after 5 s by default:
  a request sent on a connection idle for 5–25 s met a closed socket, and the
  client retried it after its 2 s back-off: a ~2 s stall of the first request
  after a quiet spell — one of the two causes of the ~2 s every stage's first
  task run sat in Pending (the other, SQLite's "database is locked" answered as
  503 to the tag concurrency request, is why the pipeline's tasks carry no tags:
  docs/operations.md). `bench/pending.py` prints the largest Pending→Running
  gap of a run;
- a chunk waiting for a global concurrency slot (``scoring``, ``publish``,
  ``ollama``) asks again within ~1 s. The server's 423 names the Retry-After the
  client sleeps: the limit's average slot occupancy times the requests it denied,
  capped at ``maximum_concurrency_slot_wait_seconds`` (30 s by default), +30 %
  jitter — a chunk queued behind another slept 22–39 s after the slot was already
  free, and two such sleeps were ~60 s stalls. The cap is 1 s here (a server
  setting: it holds for the home's background server, Prefect's temporary one and
  any server started with this environment; a server of the user's own keeps its
  setting, ``docs/operations.md``);
- task results persisted under ``GALLERYFLOW_HOME/results``, so task caching
  works across runs (Prefect's default keeps results in memory only);
- when no Prefect server is configured, the embedded server's database under
  ``GALLERYFLOW_HOME/prefect/`` instead of the user's global
  ``~/.prefect/prefect.db``. That file belongs to whatever Prefect the user runs
  elsewhere: once a newer Prefect has migrated it, the Prefect galleryflow was
  tested with cannot open it ("No such revision") and its embedded server never
  comes up; and galleryflow must not migrate it under the user's other tools
  either. The user's profiles and their own server are left as they are.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    # Keep-alive longer than the client's (see the module docstring): the embedded
    # server is `python -m uvicorn`, which reads UVICORN_* options from the
    # environment it inherits; `prefect server start` reads Prefect's own setting.
    "UVICORN_TIMEOUT_KEEP_ALIVE": "60",
    "PREFECT_SERVER_API_KEEPALIVE_TIMEOUT": "60",
    # Retry-After of a taken slot at most ~1 s (see the module docstring).
    "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
}

API_URL = "PREFECT_API_URL"
# Both names Prefect accepts for the server's database (the second is the 2.x one).
DATABASE_URLS = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


def configure_prefect_env() -> None:
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    home = gallery_home()
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(home / "results"))
    profile = active_profile_settings()
    chosen = {**profile, **os.environ}
    if not chosen.get(API_URL) and not any(chosen.get(name) for name in DATABASE_URLS):
        database = home / "prefect" / "prefect.db"
        # SQLite creates the file, not its folder.
        database.parent.mkdir(parents=True, exist_ok=True)
        os.environ[DATABASE_URLS[0]] = f"sqlite+aiosqlite:///{database}"
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def gallery_home() -> Path:
    return Path(os.environ.get("GALLERYFLOW_HOME", ".galleryflow")).expanduser().resolve()


def active_profile_settings() -> dict[str, str]:
    """The settings of the user's active Prefect profile, read without importing Prefect.

    Written here rather than asked of Prefect because importing ``prefect`` fixes
    its settings at that moment: the defaults above must be in the environment
    first. Only the profile file is read (never created); an unreadable one counts
    as empty, the way Prefect then starts with its defaults.
    """
    prefect_home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", prefect_home / "profiles.toml")).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    # Imported only for a file there is: its parser costs ~7 ms to import, which every
    # command (the warm process's small client too) paid for a file that is not there.
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}
    name = os.environ.get("PREFECT_PROFILE") or document.get("active") or "ephemeral"
    profile = document.get("profiles", {}).get(name, {})
    return {str(k): str(v) for k, v in profile.items()} if isinstance(profile, dict) else {}
