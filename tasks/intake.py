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

Copies are content-addressed (``incoming/<set>/<sha256[:16]>/<name>``) and never
overwritten: a file re-exported under a known name with *different* content is a
new photo with its own copy, and the earlier row keeps the bytes it was reviewed
(and maybe published) from.

A new copy is also decoded here, once, while its bytes are fresh in the page
cache and on the same I/O threads (so the decode overlaps the next file's copy):
the reduced scoring input is left in the session's scratch store and the
model-ready image is written under stage 6's name (:func:`make_ahead`); stages 5
and 6 then take them instead of decoding. A file that does not decode here is
left to them: they decode it and fail its row with the reason, as for any photo.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction
from pydantic import BaseModel
from sqlalchemy import select

from galleryflow.db import ImageSet, Photo, migrate, session_scope
from galleryflow.db.engine import is_up_to_date
from galleryflow.core.fsutil import FileStamp, copy_verified, sha256_file
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.liveness import current_owner
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import SetStatus
from galleryflow.core.stages import ChunkReport, StageError
from galleryflow.core.workers import map_all
from galleryflow.imaging.decode import open_reduced
from galleryflow.imaging.geometry import reduce
from galleryflow.imaging.shared import store_derived
from tasks.model_resize import model_image_path, save_model_image
from tasks.rollback import rollback_or_mark
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
    """Bring galleryflow's DB to the latest migration (idempotent).

    A DB already at the head is left alone without asking alembic (importing it and
    reading every migration cost ~0.3 s of every run)."""
    settings = get_settings()
    settings.ensure_dirs()
    if not is_up_to_date(settings.db_url):
        migrate(settings.db_url)
    return settings.db_url.split("@")[-1]  # never the credentials


@task(name="open-session", cache_policy=NO_CACHE)
def open_session(report: SetReport, flow_run_id: str | None, location: str | None,
                 subject: str | None) -> int:
    """Record this set's session; its rollback hook undoes the whole session."""
    with session_scope() as db:
        image_set = ImageSet(
            set_key=report.name, name=report.name, source_dir=report.path,
            status=SetStatus.RUNNING, flow_run_id=flow_run_id, owner=current_owner(),
            location=location,
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
        rollback_or_mark(image_set_id, get_settings())


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


def known_copies(items: list[IntakeItem]) -> dict[tuple[str, str], list[KnownCopy]]:
    """The recorded sha256 and stamp of every incoming copy made before under the names
    of ``items``, by (set, file name): a name may have had several contents (re-exports)."""
    names: dict[str, list[str]] = {}
    for item in items:
        names.setdefault(item.set_name, []).append(item.name)
    known: dict[tuple[str, str], list[KnownCopy]] = {}
    with session_scope() as db:
        for set_name, files in names.items():
            rows = db.execute(select(
                Photo.original_name, Photo.sha256, Photo.file_size,
                Photo.file_mtime_ns, Photo.incoming_path,
            ).where(Photo.set_key == set_name, Photo.original_name.in_(files))
             .order_by(Photo.id.desc()))
            for name, sha, size, mtime_ns, incoming in rows:
                if size is not None and mtime_ns is not None and incoming:
                    known.setdefault((set_name, name), []).append(
                        KnownCopy(sha, FileStamp(size, mtime_ns), incoming))
    return known


def content_path(settings: Settings, set_name: str, name: str, sha256: str) -> Path:
    """Where the copy of this content lives: ``incoming/<set>/<sha256[:16]>/<name>``.

    Content-addressed, so a re-exported file under a known name never overwrites the
    copy an earlier (maybe approved, maybe published) row was made from.
    """
    incoming = settings.incoming_dir.resolve()
    dest = (incoming / set_name / sha256[:16] / name).resolve()
    if not dest.is_relative_to(incoming / set_name):  # validate refuses such names first
        raise StageError(f"{set_name}/{name}: would be copied outside {incoming}")
    return dest


def _unchanged_copy(source: Path, candidates: list[KnownCopy]) -> tuple[str, Path] | None:
    """An incoming copy made earlier from the same content as ``source``, if one is still
    on disk as intake left it: (sha256, path). Hashes the source only when a copy of its
    size exists (the copy itself is known by its recorded sha256 and stamp)."""
    size = source.stat().st_size
    source_sha: str | None = None
    for known in candidates:
        path = Path(known.incoming_path)
        if known.stamp.size != size or not path.is_file() or FileStamp.of(path) != known.stamp:
            continue
        source_sha = source_sha or sha256_file(source)
        if known.sha256 == source_sha:
            return source_sha, path
    return None


def copy_in(item: IntakeItem, settings: Settings, ledger: SessionLedger,
            known: list[KnownCopy] | KnownCopy | None = None) -> IntakeResult:
    """Copy one file into incoming/ with verification; skip an identical copy.

    ``known``: what the state DB recorded about copies already made under this name
    (:func:`known_copies`): a copy that still carries its recorded stamp is known by
    its recorded sha256, so a rerun hashes only the original. A copy is never
    overwritten: new content goes to its own content-addressed path.
    """
    source = Path(item.source_path)
    candidates = [known] if isinstance(known, KnownCopy) else list(known or [])
    found = _unchanged_copy(source, candidates)
    if found is not None:
        return IntakeResult.of_copy(item, found[0], found[1], copied=False)
    set_dir = settings.incoming_dir / item.set_name
    # Copied (and hashed, one read) under a name of this session first; the sha256
    # then says where it belongs. Both are in the ledger before they exist.
    pending = set_dir / ".pending" / f"{ledger.image_set_id}-{item.name}"
    ledger.record_created_file(pending)
    try:
        source_sha = copy_verified(source, pending)
    except IOError as exc:
        raise IOError(f"{item.set_name}/{item.name}: the copy in incoming/ does not match the "
                      f"original: {exc}") from exc
    dest = content_path(settings, item.set_name, item.name, source_sha)
    if dest.is_file():
        if dest.stat().st_size == pending.stat().st_size and sha256_file(dest) == source_sha:
            pending.unlink()  # the same content is already there (an earlier session's)
            return IntakeResult.of_copy(item, source_sha, dest, copied=False)
        ledger.backup_file(dest)  # damaged behind intake's back: restored on rollback
    ledger.record_created_file(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(pending, dest)
    make_ahead(item, source_sha, dest, settings, ledger)
    return IntakeResult.of_copy(item, source_sha, dest, copied=True)


def make_ahead(item: IntakeItem, sha256: str, copy: Path, settings: Settings,
               ledger: SessionLedger) -> bool:
    """Decode a new copy once and leave what stages 5 and 6 derive from it: the
    scoring input (scratch store) and the model-ready image (stage 6's file, in the
    ledger). Exactly the pixels they would make themselves (one decode at
    ``shared_decode_edge``, each size reduced from it by the same call). False when
    the file does not decode: stages 5-6 then decode it and fail its row, naming
    the fault; nothing else is lost."""
    decode_edge = settings.shared_decode_edge
    target = model_image_path(settings, item.set_name, item.name, sha256)
    try:
        image = open_reduced(copy, decode_edge)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    analysis_edge = settings.scoring.analysis_long_edge
    store_derived(ledger.scratch, copy, reduce(image, analysis_edge, copy=True),
                  analysis_edge, decode_edge)
    if not target.is_file():
        ledger.record_created_file(target)  # before it exists: a crash mid-write is undone
        target.parent.mkdir(parents=True, exist_ok=True)
        save_model_image(reduce(image, settings.model_resize.long_edge, copy=False), target,
                         settings.model_resize.quality)
    return True


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

    return map_all(one, items, settings.threads)  # the process's pool, shared by chunks


def tidy_pending(settings: Settings, set_name: str) -> None:
    """Remove the set's empty pending folder once its session committed (never while
    chunks may still copy into it)."""
    try:
        (settings.incoming_dir / set_name / ".pending").rmdir()
    except OSError:  # not there, or not empty (another session of the set is copying)
        pass


def intake_report(results: list[IntakeResult]) -> ChunkReport:
    report = ChunkReport(stage="intake")
    for r in results:
        note = "copied" if r.copied else "already in incoming/ (unchanged)"
        if r.warnings:
            report.add(r.name, "warning", f"{note}; {'; '.join(r.warnings)}")
        else:
            report.add(r.name, "ok", note)
    return report
