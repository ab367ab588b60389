"""Stage 2: prepare the DB and copy the accepted files into ``incoming/<set>/``.

Originals are only ever read. Each copy is written to a temporary name, checked
(after ``fsync`` it holds every byte read from the source) and renamed into
place; an interrupted or short copy leaves no partial file under the final name.
The source is hashed while it is copied (one read): that sha256 is the photo's
identity from here on, carried by every later stage instead of hashing the file
again; the copy's size and mtime (its ``FileStamp``, stored on the row) let a later
stage check cheaply that the copy is still that content. A rerun copies
nothing twice: a file already in ``incoming/`` with the same content is kept, and
hashes only the original (the copy is known by the sha256 its row recorded while
it carries the recorded stamp).

A file already in ``incoming/`` with *different* content (the photographer
re-exported it) is moved into the session's ledger first, so a rollback can put
it back.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction
from pydantic import BaseModel
from sqlalchemy import select

from galleryflow.db import ImageSet, Photo, migrate, session_scope
from galleryflow.core.fsutil import FileStamp, copy_verified, sha256_file
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import SetStatus
from galleryflow.core.stages import ChunkReport, StageError
from tasks.rollback import rollback_session
from tasks.validate import FileCheck, SetReport


class IntakeItem(BaseModel):
    """One accepted file on its way in."""

    set_name: str
    name: str
    source_path: str
    format: str | None = None
    width: int | None = None
    height: int | None = None
    warnings: list[str] = []

    @classmethod
    def from_check(cls, check: FileCheck) -> "IntakeItem":
        return cls(set_name=check.set_name, name=check.name, source_path=check.path,
                   format=check.format, width=check.width, height=check.height,
                   warnings=check.messages)


class IntakeResult(IntakeItem):
    sha256: str
    incoming_path: str
    size: int
    mtime_ns: int | None = None  # the incoming copy's, with ``size`` its FileStamp
    copied: bool

    @classmethod
    def of_copy(cls, item: IntakeItem, sha256: str, dest: Path, copied: bool) -> "IntakeResult":
        stamp = FileStamp.of(dest)
        return cls(**item.model_dump(), sha256=sha256, incoming_path=str(dest),
                   size=stamp.size, mtime_ns=stamp.mtime_ns, copied=copied)


@task(name="prepare-db", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def prepare_db() -> str:
    """Bring galleryflow's DB to the latest migration (idempotent)."""
    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.db_url)
    return settings.db_url.split("@")[-1]  # never the credentials


@task(name="open-session", cache_policy=NO_CACHE)
def open_session(report: SetReport, flow_run_id: str | None, location: str | None,
                 subject: str | None) -> int:
    """Record this set's session; its rollback hook undoes the whole session."""
    with session_scope() as db:
        image_set = ImageSet(
            set_key=report.name, name=report.name, source_dir=report.path,
            status=SetStatus.RUNNING, flow_run_id=flow_run_id, location=location,
            subject=subject, image_count=len(report.accepted),
            excluded_count=len(report.excluded),
            report={"excluded": [{"file": f.name, "reason": "; ".join(f.messages)}
                                 for f in report.excluded]},
            content_sha256=_listing_digest(report),
        )
        db.add(image_set)
        db.flush()
        image_set_id = image_set.id
    txn = get_transaction()
    if txn is not None:
        txn.set("image_set_id", image_set_id)
    return image_set_id


@open_session.on_rollback
def _rollback_session(txn) -> None:  # type: ignore[no-untyped-def]

    image_set_id = txn.get("image_set_id", None)
    if image_set_id is not None:
        rollback_session(image_set_id, get_settings())


def _listing_digest(report: SetReport) -> str:
    """A cheap identity of the set's listing (names and sizes) for watch/report."""
    digest = hashlib.sha256()
    for check in report.accepted:
        digest.update(f"{check.name}\0{check.size}\n".encode())
    return digest.hexdigest()


class KnownCopy(NamedTuple):
    """What the state DB recorded about an incoming copy when intake made it."""

    sha256: str
    stamp: FileStamp
    incoming_path: str


def known_copies(items: list[IntakeItem]) -> dict[tuple[str, str], KnownCopy]:
    """The recorded sha256 and stamp of the incoming copies ``items`` would replace,
    by (set, file name): rows that have both."""
    names: dict[str, list[str]] = {}
    for item in items:
        names.setdefault(item.set_name, []).append(item.name)
    known: dict[tuple[str, str], KnownCopy] = {}
    with session_scope() as db:
        for set_name, files in names.items():
            rows = db.execute(select(
                Photo.original_name, Photo.sha256, Photo.file_size,
                Photo.file_mtime_ns, Photo.incoming_path,
            ).where(Photo.set_key == set_name, Photo.original_name.in_(files)))
            for name, sha, size, mtime_ns, incoming in rows:
                if size is not None and mtime_ns is not None and incoming:
                    known[(set_name, name)] = KnownCopy(sha, FileStamp(size, mtime_ns), incoming)
    return known


def _copy_sha256(dest: Path, known: KnownCopy | None) -> str:
    """An incoming copy's content: the sha256 recorded when intake made it, as long as
    the copy still carries the stamp recorded with it; otherwise hashed."""
    if known is not None and Path(known.incoming_path) == dest and FileStamp.of(dest) == known.stamp:
        return known.sha256
    return sha256_file(dest)


def copy_in(item: IntakeItem, settings: Settings, ledger: SessionLedger,
            known: KnownCopy | None = None) -> IntakeResult:
    """Copy one file into incoming/ with verification; skip an identical copy.

    ``known``: what the state DB recorded about the copy already in incoming/
    (:func:`known_copies`): a copy that still carries its recorded stamp is known by
    its recorded sha256, so a rerun hashes only the original.
    """
    source = Path(item.source_path)
    dest = settings.incoming_dir / item.set_name / item.name
    if dest.exists():
        # A copy of another size is another file: no need to hash either to know it
        # (the copy below hashes the source while reading it, once).
        if dest.stat().st_size == source.stat().st_size:
            source_sha = sha256_file(source)
            if _copy_sha256(dest, known) == source_sha:
                return IntakeResult.of_copy(item, source_sha, dest, copied=False)
        ledger.backup_file(dest)
    ledger.record_created_file(dest)
    try:
        source_sha = copy_verified(source, dest)
    except IOError as exc:
        raise IOError(f"{item.set_name}/{item.name}: the copy in incoming/ does not match the "
                      f"original: {exc}") from exc
    return IntakeResult.of_copy(item, source_sha, dest, copied=True)


@task(name="intake-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def intake_chunk(items: list[IntakeItem], image_set_id: int) -> list[IntakeResult]:
    """Stage 2 for a chunk: verified, atomic copies. An I/O error is retried, then blocks."""
    settings = get_settings()
    ledger = SessionLedger(settings, image_set_id)
    progress = StageProgress("intake", len(items), min_interval=2.0)
    known = known_copies(items)

    def one(item: IntakeItem) -> IntakeResult:
        try:
            return copy_in(item, settings, ledger, known.get((item.set_name, item.name)))
        except OSError as exc:
            raise StageError(f"{item.set_name}/{item.name}: copy into incoming/ failed: {exc}") from exc
        finally:
            progress.advance()

    with ThreadPoolExecutor(max_workers=min(4, settings.threads)) as pool:
        return list(pool.map(one, items))


def intake_report(results: list[IntakeResult]) -> ChunkReport:
    report = ChunkReport(stage="intake")
    for r in results:
        note = "copied" if r.copied else "already in incoming/ (unchanged)"
        if r.warnings:
            report.add(r.name, "warning", f"{note}; {'; '.join(r.warnings)}")
        else:
            report.add(r.name, "ok", note)
    return report
