"""Engines, sessions and migrations for galleryflow's own database.

Alembic is imported only to migrate (or when the quick schema check below cannot
decide): :func:`is_up_to_date`, asked by every command that touches the DB, reads
the head revision from the migration files' ``revision``/``down_revision`` lines
and the DB's revision with one query (~0.1 s less per process than asking
alembic, which imports ~80 modules and parses every migration).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from galleryflow.core.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the UI/CLI read while a run writes; busy_timeout absorbs the short
    # write locks that per-chunk task threads take.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives
    # the process being killed (what batch progress and the ledger must survive), and
    # only a power cut can lose the latest commits, never the DB's consistency. FULL
    # cost an fsync per commit (~6 ms each: a batch job records every file).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process (engines own connection pools)."""
    url = url or get_settings().db_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_recycle=3600)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (idempotent)."""
    from alembic import command

    url = url or get_settings().db_url
    engine = get_engine(url)
    cfg = alembic_config(url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # SQLite changes a constraint by copying the table and dropping the old one;
            # with foreign keys on, that DROP would cascade into the tables that refer to
            # it (every proof gone). The pragma only takes effect outside a transaction.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, revision)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.M)


@functools.cache
def quick_head_revision() -> str | None:
    """The head revision from the migration files' own lines, without alembic; None
    when that is not plain (a merge, a branch, a line it cannot read): ask alembic."""
    revisions: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        try:
            revision = found["revision"].strip("'\"")
            down = found["down_revision"]
        except KeyError:
            return None
        if down == "None":
            revisions[revision] = None
        elif down[:1] in "'\"" and down[-1:] == down[:1] and "," not in down:
            revisions[revision] = down.strip("'\"")
        else:
            return None  # a tuple: a merge revision
    heads = set(revisions) - {down for down in revisions.values() if down}
    return heads.pop() if len(heads) == 1 else None


def _stored_revisions(url: str | None) -> list[str] | None:
    """The revisions the DB says it is at (None: no alembic table yet)."""
    try:
        with get_engine(url).connect() as connection:
            return list(connection.execute(text("SELECT version_num FROM alembic_version"))
                        .scalars())
    except DBAPIError:
        return None


def is_up_to_date(url: str | None = None) -> bool:
    head = quick_head_revision()
    if head is not None:
        stored = _stored_revisions(url)
        if stored == [head]:
            return True
        if stored is None or stored == []:
            return False
    return current_revision(url) == head_revision()
