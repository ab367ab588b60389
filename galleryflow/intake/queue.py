"""Which set folders under an intake folder are ready, and which run takes each one.

The intake root (``settings.watch.intake_root``, default ``<home>/intake``) holds
two folders of sets::

    <intake_root>/queue/<set>/    taken by the nightly run (process-sets/nightly)
    <intake_root>/urgent/<set>/   taken at once by `galleryflow watch`, or by the
                                  urgent run every 15 minutes (process-sets/urgent)

A set folder is **ready** when it holds a ``.ready`` marker, or when nothing in it
has changed for ``settings.watch.quiet_seconds`` and no partial download is left
(``*.part``, ``*.crdownload``, rsync's ``.name.XXXXXX``). Change times come from
both mtime and ctime: a copy tool can preserve a file's mtime but not its ctime.

A set's **content** is identified by a sha256 over the sorted sha256s of its
image files (names do not matter: the same photos dropped twice are one set).
Hashing is cached in ``<home>/intake-index.json`` against the folder's listing
(names, sizes, mtimes), so a scheduled run does not re-read sets it has seen.

**Claims** make "exactly one run per set" hold across the watch service, the
scheduled runs and restarts: the first of them to insert the content's sha256
into ``seen_content`` (unique) takes the set; everybody else skips it. A run that
fails releases the claims of the sets it did not complete (see
:func:`release_claims`, used as a flow hook), so the next scheduled run retries
them; a rerun of the *same* flow run (Retry in the UI) keeps its claims.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update
from galleryflow.db import ImageSet, SeenContent, session_scope
from galleryflow.db import migrate
from galleryflow.core.status import SetStatus
from sqlalchemy.exc import IntegrityError

from galleryflow.core.fsutil import atomic_write_text, sha256_file
from galleryflow.core.prefect_run import flow_run_id as current_flow_run_id
from galleryflow.core.prefect_run import run_logger
from galleryflow.core.settings import Settings

log = logging.getLogger(__name__)

QUEUES = ("queue", "urgent")
Queue = Literal["queue", "urgent"]

# Names a download or copy in progress leaves behind.
_PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", "~")
_RSYNC_TEMP = re.compile(r"^\..+\.[A-Za-z0-9]{6}$")
_SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


def intake_root(settings: Settings) -> Path:
    return (settings.watch.intake_root or settings.home / "intake").expanduser().resolve()


def resolve_intake_dir(intake_dir: str | Path, settings: Settings) -> Path:
    """An intake folder: absolute as given, or relative to the intake root.

    Deployments pass ``queue`` / ``urgent`` so that each worker machine finds the
    intake where *its* settings say it is.
    """
    path = Path(intake_dir).expanduser()
    return path if path.is_absolute() else intake_root(settings) / path


class FolderState(BaseModel):
    """One look at a set folder: what is in it and when it last changed."""

    folder: str
    images: list[str] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list)  # not images (logged, never processed)
    partial: list[str] = Field(default_factory=list)  # downloads/copies in progress
    marker: bool = False
    last_change: float = 0.0  # newest mtime/ctime of the folder and its entries
    listing: str = ""  # sha256 of (name, size, mtime_ns) of every entry

    def quiet_for(self, now: float) -> float:
        return now - self.last_change


def _is_partial(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(_PARTIAL_SUFFIXES) or bool(_RSYNC_TEMP.match(name))


def inspect_folder(folder: Path, settings: Settings) -> FolderState:
    """List a set folder (its direct files, as stage 1 does) without reading any file."""
    exts = {e.lower() for e in settings.validation.extensions}
    marker = settings.watch.ready_marker
    state = FolderState(folder=str(folder))
    stat = folder.stat()
    newest = max(stat.st_mtime, stat.st_ctime)
    listing = hashlib.sha256()
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        try:
            info = entry.stat()
        except FileNotFoundError:  # vanished while we looked: the folder is not quiet
            newest = time.time()
            continue
        newest = max(newest, info.st_mtime, info.st_ctime)
        listing.update(f"{entry.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        name = entry.name
        if entry.is_dir():
            continue
        if name == marker:
            state.marker = True
        elif _is_partial(name):
            state.partial.append(name)
        elif name.startswith(".") or name.lower() in _SYSTEM_NAMES:
            continue
        elif entry.suffix.lower() in exts:
            state.images.append(name)
        else:
            state.ignored.append(name)
    state.last_change = newest
    state.listing = listing.hexdigest()
    return state


def is_ready(state: FolderState, settings: Settings, now: float | None = None) -> bool:
    """Ready: images and a marker, or images, no partial file and a quiet period."""
    if not state.images:
        return False
    if state.marker:
        return True
    now = time.time() if now is None else now
    return not state.partial and state.quiet_for(now) >= settings.watch.quiet_seconds


def set_folders(intake_dir: Path) -> list[Path]:
    """The candidate set folders directly under an intake folder, by name."""
    if not intake_dir.is_dir():
        return []
    return [p for p in sorted(intake_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]


# --- content identity --------------------------------------------------------

def _index_path(settings: Settings) -> Path:
    return settings.home / "intake-index.json"


def _read_index(settings: Settings) -> dict[str, dict[str, str]]:
    try:
        return json.loads(_index_path(settings).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def content_digest(state: FolderState, settings: Settings) -> str:
    """sha256 over the sorted sha256s of the set's images (cached by listing)."""
    index = _read_index(settings)
    cached = index.get(state.folder)
    if cached and cached.get("listing") == state.listing:
        return cached["sha256"]
    folder = Path(state.folder)
    digests = sorted(sha256_file(folder / name) for name in state.images)
    digest = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    # Another process may have written meanwhile: re-read, add ours, write atomically.
    index = _read_index(settings)
    index[state.folder] = {"listing": state.listing, "sha256": digest}
    atomic_write_text(_index_path(settings), json.dumps(index, indent=1, sort_keys=True))
    return digest


# --- claims (seen_content) ---------------------------------------------------

class Claim(BaseModel):
    id: int
    content_sha256: str
    folder: str
    queue: str
    flow_run_id: str | None
    created_at: datetime
    mine: bool  # this call inserted it (or it already belonged to this flow run)


def _claim_from_row(row, mine: bool) -> Claim:  # type: ignore[no-untyped-def]
    return Claim(id=row.id, content_sha256=row.content_sha256, folder=row.folder,
                 queue=row.queue, flow_run_id=row.flow_run_id, created_at=row.created_at,
                 mine=mine)


def claim(content_sha256: str, folder: str, queue: str, flow_run_id: str | None) -> Claim:
    """Take a set for a run, or learn who has it. ``Claim.mine`` says which.

    The unique index on ``seen_content.content_sha256`` arbitrates between
    concurrent claimers (the watch service, scheduled runs on several workers).
    """

    try:
        with session_scope() as db:
            row = SeenContent(content_sha256=content_sha256, folder=folder, queue=queue,
                              flow_run_id=flow_run_id)
            db.add(row)
            db.flush()
            return _claim_from_row(row, mine=True)
    except IntegrityError:
        pass
    with session_scope() as db:
        row = db.scalars(select(SeenContent).where(SeenContent.content_sha256 == content_sha256)).one()
        # A retry of the same flow run keeps what that run had claimed.
        mine = flow_run_id is not None and row.flow_run_id == flow_run_id
        return _claim_from_row(row, mine=mine)


def set_claim_run(claim_id: int, flow_run_id: str) -> None:

    with session_scope() as db:
        db.execute(update(SeenContent).where(SeenContent.id == claim_id).values(flow_run_id=flow_run_id))


def pending_claims(queue: str) -> list[Claim]:
    """Claims the watch service made but had not yet turned into a run (it stopped)."""

    with session_scope() as db:
        rows = db.scalars(select(SeenContent).where(SeenContent.queue == queue,
                                                    SeenContent.flow_run_id.is_(None)))
        return [_claim_from_row(r, mine=True) for r in rows]


def release_claims(flow_run_id: str) -> list[str]:
    """Forget the claims of ``flow_run_id`` whose sets it did not complete.

    Called when a run fails, crashes or is cancelled: the next scheduled run
    then takes those sets again. Sets the run completed stay claimed. Returns
    the released folders.
    """

    done = {SetStatus.COMPLETED, SetStatus.AWAITING_REVIEW}
    with session_scope() as db:
        completed = {
            s.source_dir for s in db.scalars(select(ImageSet).where(ImageSet.flow_run_id == flow_run_id))
            if s.status in done
        }
        claims = list(db.scalars(select(SeenContent).where(SeenContent.flow_run_id == flow_run_id)))
        released = [c for c in claims if c.folder not in completed]
        if released:
            db.execute(delete(SeenContent).where(SeenContent.id.in_([c.id for c in released])))
        return [c.folder for c in released]


# --- the scheduled runs' view ------------------------------------------------

def discover_sets(intake_dir: Path, settings: Settings) -> list[Path]:
    """The ready sets under ``intake_dir`` that this run takes (claims), by name.

    Skipped, each with a log line: folders without images, sets still arriving
    (no marker, not quiet yet, partial files), and content another run (or the
    watch service) has already taken. Files that are not images are named in
    the log and left alone.
    """

    intake_dir = resolve_intake_dir(intake_dir, settings)
    folders = set_folders(intake_dir)
    if not folders:
        return []
    migrate(settings.db_url)
    flow_run_id = current_flow_run_id()  # None outside Prefect: no run to claim for
    logger = run_logger(log)
    queue = intake_dir.name
    taken: list[Path] = []
    now = time.time()
    for folder in folders:
        state = inspect_folder(folder, settings)
        if state.ignored:
            logger.info("%s: not image files, ignored: %s", folder, ", ".join(state.ignored))
        if not state.images:
            logger.info("%s: no images yet, skipped", folder)
            continue
        if not is_ready(state, settings, now):
            why = (f"partial files {', '.join(state.partial)}" if state.partial
                   else f"changed {state.quiet_for(now):.0f} s ago (quiet period "
                        f"{settings.watch.quiet_seconds:.0f} s, or add {settings.watch.ready_marker})")
            logger.info("%s: still arriving (%s), left for a later run", folder, why)
            continue
        digest = content_digest(state, settings)
        result = claim(digest, str(folder.resolve()), queue, flow_run_id)
        if not result.mine:
            logger.info("%s: content already taken by run %s on %s, skipped", folder,
                     result.flow_run_id or "(being started by the watch service)",
                     result.created_at.isoformat(sep=" ", timespec="seconds"))
            continue
        taken.append(folder)
    return taken
