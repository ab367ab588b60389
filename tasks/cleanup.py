"""Cleanup: work files and temporary artifacts older than N days.

What goes (each older than its age limit, by mtime):

- ``work``: files under ``work/`` (model-ready copies, thumbnails, …) not used by
  a row that is still in progress (anything but published or rejected); rows
  that pointed at a removed file get that path cleared;
- ``ledger``: ``work/.sessions/<id>/`` of sessions that are no longer running
  (a running session's ledger is what its rollback needs);
- ``partial``: ``.*.part`` leftovers of interrupted atomic writes in ``incoming/``
  and ``work/``;
- ``results``: persisted Prefect task results (the rerun cache) older than
  ``ops.results_days``: a later rerun recomputes instead of reusing;
- ``incoming``: with ``ops.cleanup_published_incoming``, the ``incoming/`` copy of a
  row published more than N days ago (the site has its derivatives, the
  original is where it always was).

What never goes, whatever its age: an original (any row's ``source_path``, any
file under a set's source folder or the intake root), the ``incoming/`` copy of a
row that is not published, and anything under the site folder (published
files). Every deletion passes :meth:`Guard.allows`, which checks exactly that.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field
from sqlalchemy import select, update

from galleryflow.db import ImageSet, Photo, migrate, session_scope
from galleryflow.intake.queue import intake_root
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import RowStatus, SetStatus

Kind = Literal["work", "ledger", "partial", "results", "incoming"]
FINAL = {RowStatus.PUBLISHED, RowStatus.REJECTED}


class Removal(BaseModel):
    path: str
    kind: Kind
    bytes: int


class CleanupReport(BaseModel):
    older_than_days: float
    results_days: float
    dry_run: bool
    removed: list[Removal] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list)  # candidates the guard kept
    cleared_row_paths: int = 0

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.removed))


def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass
class Guard:
    """What must never be deleted, read from the DB and the settings once per run."""

    protected_files: set[str] = field(default_factory=set)
    protected_roots: list[str] = field(default_factory=list)
    allowed_roots: list[str] = field(default_factory=list)

    def allows(self, path: str | Path) -> bool:
        p = _norm(path)
        if p in self.protected_files:
            return False
        if any(_under(p, root) for root in self.protected_roots):
            return False
        return any(_under(p, root) and p != root for root in self.allowed_roots)


def build_guard(settings: Settings) -> tuple[Guard, set[str]]:
    """(the guard, work files referenced by rows still in progress)."""
    guard = Guard(
        protected_roots=[_norm(settings.site_dir), _norm(intake_root(settings))],
        allowed_roots=[_norm(settings.work_dir), _norm(settings.incoming_dir),
                       _norm(settings.results_dir)],
    )
    in_use: set[str] = set()
    with session_scope() as db:
        for source_dir in db.scalars(select(ImageSet.source_dir).distinct()):
            if source_dir:
                guard.protected_roots.append(_norm(source_dir))
        query = select(Photo.source_path, Photo.incoming_path, Photo.status,
                       Photo.ollama_path, Photo.thumbnail_path)
        for source, incoming, status, ollama, thumb in db.execute(query):
            guard.protected_files.add(_norm(source))
            if incoming and status != RowStatus.PUBLISHED:
                guard.protected_files.add(_norm(incoming))
            if status not in FINAL:
                in_use.update(_norm(p) for p in (ollama, thumb) if p)
    return guard, in_use


def _old_files(root: Path, cutoff: float, skip_dirs: tuple[str, ...] = ()) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                if path.lstat().st_mtime < cutoff:
                    found.append(path)
            except FileNotFoundError:
                continue
    return found


def _is_partial(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".part")


def _ledgers_to_remove(settings: Settings, cutoff: float) -> list[Path]:
    sessions = settings.work_dir / ".sessions"
    if not sessions.is_dir():
        return []
    with session_scope() as db:
        running = {str(i) for i in db.scalars(
            select(ImageSet.id).where(ImageSet.status == SetStatus.RUNNING))}
    def last_write(folder: Path) -> float:
        # a ledger's folders get new mtimes as entries land: its files say when it was used
        return max((f.stat().st_mtime for f in folder.rglob("*") if f.is_file()),
                   default=folder.stat().st_mtime)

    return [d for d in sorted(sessions.iterdir())
            if d.is_dir() and d.name not in running and last_write(d) < cutoff]


def _published_incoming(cutoff_dt) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope() as db:
        return [p for p in db.scalars(
            select(Photo.incoming_path).where(
                Photo.status == RowStatus.PUBLISHED, Photo.published_at < cutoff_dt,
                Photo.incoming_path.is_not(None)))]


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _dirnames, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        folder = Path(dirpath)
        if folder != root and not any(folder.iterdir()):
            folder.rmdir()


def plan_and_clean(settings: Settings, older_than_days: float, results_days: float,
                   dry_run: bool = False, now: float | None = None) -> CleanupReport:
    """Find what may go, check each path against the guard, remove it (unless dry run)."""
    from datetime import datetime, timezone

    now = time.time() if now is None else now
    cutoff = now - older_than_days * 86400
    results_cutoff = now - results_days * 86400
    report = CleanupReport(older_than_days=older_than_days, results_days=results_days,
                           dry_run=dry_run)
    guard, in_use = build_guard(settings)

    candidates: list[tuple[Path, Kind]] = []
    for path in _old_files(settings.work_dir, cutoff, skip_dirs=(".sessions",)):
        if _is_partial(path):
            candidates.append((path, "partial"))
        elif _norm(path) not in in_use:
            candidates.append((path, "work"))
    candidates += [(p, "partial") for p in _old_files(settings.incoming_dir, cutoff) if _is_partial(p)]
    candidates += [(p, "results") for p in _old_files(settings.results_dir, results_cutoff)]
    if settings.ops.cleanup_published_incoming:
        cutoff_dt = datetime.fromtimestamp(cutoff, timezone.utc).replace(tzinfo=None)
        candidates += [(Path(p), "incoming") for p in _published_incoming(cutoff_dt)
                       if Path(p).is_file()]

    removed_work: list[str] = []
    for path, kind in candidates:
        if not guard.allows(path):
            report.refused.append(str(path))
            continue
        size = path.lstat().st_size
        if not dry_run:
            path.unlink(missing_ok=True)
        report.removed.append(Removal(path=str(path), kind=kind, bytes=size))
        if kind == "work":
            removed_work.append(str(path))
    for ledger in _ledgers_to_remove(settings, cutoff):
        if guard.allows(ledger):
            size = sum(f.stat().st_size for f in ledger.rglob("*") if f.is_file())
            if not dry_run:
                shutil.rmtree(ledger, ignore_errors=True)
            report.removed.append(Removal(path=str(ledger), kind="ledger", bytes=size))
    if not dry_run:
        report.cleared_row_paths = _clear_row_paths(removed_work)
        for root in (settings.work_dir, settings.incoming_dir, settings.results_dir):
            _remove_empty_dirs(root)
    return report


def _clear_row_paths(removed: list[str]) -> int:
    """Rows must not point at files that are gone (a later stage recreates them)."""
    if not removed:
        return 0
    cleared = 0
    with session_scope() as db:
        for start in range(0, len(removed), 500):
            batch = removed[start:start + 500]
            for column in (Photo.ollama_path, Photo.thumbnail_path):
                result = db.execute(update(Photo).where(column.in_(batch)).values({column: None}))
                cleared += result.rowcount or 0
    return cleared


@task(name="clean-old-files", cache_policy=NO_CACHE)
def clean_old_files(older_than_days: float, results_days: float, dry_run: bool) -> CleanupReport:
    settings = get_settings()
    migrate(settings.db_url)  # a fresh install may run cleanup before any set
    return plan_and_clean(settings, older_than_days, results_days, dry_run)


__all__ = ["CleanupReport", "Guard", "Removal", "build_guard", "clean_old_files", "plan_and_clean"]
