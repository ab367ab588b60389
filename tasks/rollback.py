"""Roll one session back so that a rerun starts clean.

Called from the ``on_rollback`` hook of ``open-session`` when the Prefect
transaction around stages 2–7 fails. It undoes exactly what the session's
ledger and ``created_session_id`` say it did:

1. files it created (incoming copies, work files) are deleted, files it
   replaced are moved back;
2. rows it inserted (and their proofs and publish log) are deleted;
3. rows it refreshed get their previous values back, bypassing the status
   machine on purpose: this *undoes* transitions rather than making new ones;
4. the session is marked ``rolled_back``.

Each step is idempotent, so a rollback interrupted half-way can simply be run
again.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, delete, select, update

from galleryflow.db import ImageSet, Proof, PublishLog, Photo, session_scope
from galleryflow.db.models import utcnow
from galleryflow.db.names import reserve
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.settings import Settings
from galleryflow.core.status import SetStatus

log = logging.getLogger(__name__)


def _decode(model: type, values: dict[str, Any]) -> dict[str, Any]:
    """Ledger JSON back to column values (datetimes were stored as strings)."""
    columns = model.__table__.columns  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in columns:
            continue
        if isinstance(columns[key].type, DateTime) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        out[key] = value
    return out


def rollback_session(image_set_id: int, settings: Settings, cause: str | None = None) -> None:
    ledger = SessionLedger(settings, image_set_id)
    removed = 0
    for path in ledger.created_files():
        if path.exists():
            path.unlink()
            removed += 1
    for backup, original in ledger.backups():
        if backup.exists():
            original.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(backup), original)
    snapshots = ledger.snapshots()
    with session_scope() as db:
        inserted = list(db.scalars(select(Photo.id).where(Photo.created_session_id == image_set_id)))
        if inserted:
            db.execute(delete(Proof).where(Proof.review_id.in_(inserted)))
            db.execute(delete(PublishLog).where(PublishLog.review_id.in_(inserted)))
            db.execute(delete(Photo).where(Photo.id.in_(inserted)))
        for snap in snapshots:
            values = snap["values"]
            if snap["table"] == "review_queue":
                db.execute(update(Photo).where(Photo.id == snap["id"])
                           .values(**_decode(Photo, values)))
                # The row's web name goes back to what it had reserved before.
                if values.get("web_file_name") and values.get("status") != "published":
                    reserve(db, snap["id"], values["web_file_name"])
            elif snap["table"] == "metadata_quality":
                # tasks/rowstate.py: "__created__" marks a proof this session added.
                db.execute(delete(Proof).where(Proof.review_id == values["review_id"]))
                if not values.get("__created__"):
                    db.execute(Proof.__table__.insert().values(**_decode(Proof, values)))
        db.execute(
            update(ImageSet).where(ImageSet.id == image_set_id).values(
                status=SetStatus.ROLLED_BACK, finished_at=utcnow(),
                error=(cause or "rolled back")[:4000],
            )
        )
    ledger.discard()
    remove_empty_folders(settings)
    log.warning(
        "session %s rolled back: %d files removed, %d rows deleted, %d rows restored",
        image_set_id, removed, len(inserted), sum(s["table"] == "review_queue" for s in snapshots),
    )


def remove_empty_folders(settings: Settings) -> None:
    """Leave no empty per-set folders (nor their content-addressed or pending
    sub-folders) behind in incoming/ or work/; the ledgers' folder is left alone."""
    for root in (settings.incoming_dir, settings.work_dir):
        if not root.is_dir():
            continue
        for top in root.iterdir():
            if not top.is_dir() or (root == settings.work_dir and top.name.startswith(".")):
                continue
            for folder in sorted((p for p in top.rglob("*") if p.is_dir()),
                                 key=lambda p: len(p.parts), reverse=True) + [top]:
                try:
                    folder.rmdir()  # only succeeds when empty
                except OSError:
                    pass


def rollback_or_mark(image_set_id: int, settings: Settings, cause: str | None = None) -> bool:
    """Roll the session back; if that raises, mark it ``rollback_failed`` with its ledger
    kept, so the next run (or ``galleryflow recover``) finishes the rollback. A session
    is never called rolled back when its rollback did not happen."""
    try:
        rollback_session(image_set_id, settings, cause)
        return True
    except Exception as exc:
        log.error("session %s: rollback failed, its ledger is kept for the next run: %s: %s",
                  image_set_id, type(exc).__name__, exc)
        with session_scope() as db:
            db.execute(update(ImageSet).where(ImageSet.id == image_set_id).values(
                status=SetStatus.ROLLBACK_FAILED,
                error=(f"rollback failed ({type(exc).__name__}: {exc}); the next run or "
                       f"`galleryflow recover` finishes it. Cause: {cause or 'unknown'}")[:4000]))
        return False


def record_cause(image_set_id: int, cause: str) -> str:
    """Store why a session was rolled back (the hook itself does not see the error);
    returns the session's status (``rollback_failed`` stays so)."""
    with session_scope() as db:
        image_set = db.get(ImageSet, image_set_id)
        if image_set is None:
            return SetStatus.ROLLED_BACK
        if image_set.status == SetStatus.ROLLBACK_FAILED:
            image_set.error = f"{cause} — {image_set.error or ''}"[:4000]
        else:
            image_set.error = cause[:4000]
            image_set.status = SetStatus.ROLLED_BACK
        return image_set.status
