"""Stage 4: insert or refresh one ``review_queue`` row per image.

A row is identified by its content (sha256) within its set, so a rerun of the
same set refreshes rather than duplicates, and a file re-exported under a known
name with other content is a new photo (reported as ``changed``) while the
earlier row keeps its own bytes. Refreshing:

- never touches a row a person has decided on or the site holds
  (approved, rejected, published);
- never overwrites a field a person edited (``edited_fields``);
- keeps scores and drafts when the content is unchanged (same sha256), and
  clears them, sending the row back to ``new``, when the file changed;
- snapshots the row (and its proof) in the session ledger first, so a rollback
  restores the previous values exactly.

All rows of a chunk are read in one query and written in one transaction.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import or_, select

from galleryflow.db import Proof, Photo, session_scope
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.settings import get_settings
from galleryflow.core.status import LOCKED_STATUSES, ProofStatus, RowStatus
from galleryflow.core.stages import ChunkReport
from tasks.exif import ExifData
from tasks.intake import IntakeResult
from tasks.rowstate import snapshot_proof, snapshot_row

# Fields derived from the pixels: stale once the file changes.
DERIVED_FIELDS = (
    "phash", "ollama_path", "thumbnail_path",
    "brisque_score", "brisque_source", "clip_aesthetic_score", "clip_aesthetic_source",
    "blur_score", "brightness_score", "contrast_score", "stats_source",
    "caption", "alt_text", "keywords", "subject", "web_file_name", "generation_mode",
)


def _apply_refresh(row: Photo, result: IntakeResult, exif: ExifData, image_set_id: int) -> str:
    """Refresh an existing, unlocked row in place; return what happened."""
    edited = set(row.edited_fields or [])
    changed = row.sha256 != result.sha256
    row.image_set_id = image_set_id
    row.sha256 = result.sha256
    row.source_path = result.source_path
    row.incoming_path = result.incoming_path
    row.file_size, row.file_mtime_ns = result.size, result.mtime_ns
    row.image_format = result.format
    row.error = None
    row.error_category = None
    for key, value in exif.row_values().items():
        setattr(row, key, value)
    if not changed:
        if row.status == RowStatus.FAILED:
            row.status = RowStatus.NEW
        return "refreshed (content unchanged)"
    for key in DERIVED_FIELDS:
        if key not in edited:
            setattr(row, key, None)
    row.proof_status = ProofStatus.PENDING
    row.status = RowStatus.NEW
    return "refreshed: the file changed, scores and drafts will be redone"


def _new_row(result: IntakeResult, exif: ExifData, image_set_id: int) -> Photo:
    return Photo(
        set_key=result.set_name, original_name=result.name, image_set_id=image_set_id,
        created_session_id=image_set_id, sha256=result.sha256, file_size=result.size,
        file_mtime_ns=result.mtime_ns, image_format=result.format, source_path=result.source_path,
        incoming_path=result.incoming_path, status=RowStatus.NEW,
        proof_status=ProofStatus.PENDING, **exif.row_values(),
    )


def _reexport_note(earlier: list[Photo]) -> str:
    versions = ", ".join(f"row {r.id} ({r.status})" for r in earlier)
    return (f"changed since it was last taken in (re-exported): a new photo that goes through "
            f"review; the earlier version{'s' if len(earlier) > 1 else ''} ({versions}) "
            f"keep{'' if len(earlier) > 1 else 's'} its own bytes")


def upsert_rows(results: list[IntakeResult], exifs: list[ExifData], image_set_id: int) -> tuple[list[int], ChunkReport]:
    """Insert or refresh the rows for a chunk; return the ids that go on, and a report.

    A row is its content (sha256) within its set. A file whose name an earlier row
    has but whose content differs is a *new* row, reported as re-exported (outcome
    ``changed``); the earlier row is left as it is, with its own incoming copy.
    """
    settings = get_settings()
    ledger = SessionLedger(settings, image_set_id)
    report = ChunkReport(stage="review_rows")
    by_sha = {e.sha256: e for e in exifs}
    ids: list[int] = []
    if not results:
        return ids, report
    set_key = results[0].set_name
    with session_scope() as db:
        same_name: dict[str, list[Photo]] = {}
        existing: dict[str, Photo] = {}
        for row in db.scalars(
            select(Photo).where(
                Photo.set_key == set_key,
                or_(Photo.original_name.in_([r.name for r in results]),
                    Photo.sha256.in_([r.sha256 for r in results])),
            ).order_by(Photo.id)
        ):
            existing.setdefault(row.sha256, row)
            same_name.setdefault(row.original_name, []).append(row)
        proofs = {
            p.review_id: p
            for p in db.scalars(
                select(Proof).where(
                    Proof.review_id.in_([r.id for r in existing.values()])
                )
            )
        } if existing else {}
        fresh: list[Photo] = []
        for result in results:
            exif = by_sha[result.sha256]
            row = existing.get(result.sha256)
            note = f"; {exif.note}" if exif.note else ""
            if row is None:
                row = _new_row(result, exif, image_set_id)
                db.add(row)
                fresh.append(row)
                existing[result.sha256] = row
                earlier = [r for r in same_name.get(result.name, []) if r.sha256 != result.sha256]
                if earlier:
                    report.add(result.name, "changed", _reexport_note(earlier) + note)
                else:
                    report.add(result.name, "warning" if exif.note else "ok", f"new row{note}")
                continue
            if row in fresh:
                report.add(result.name, "skipped",
                           f"same content as {row.original_name}: one photo, one row")
                continue
            if row.status in LOCKED_STATUSES:
                report.add(result.name, "skipped", f"left alone: already {row.status}")
                continue
            snapshot_row(ledger, row)
            snapshot_proof(ledger, row, proofs.get(row.id))
            what = _apply_refresh(row, result, exif, image_set_id)
            ids.append(row.id)
            report.add(result.name, "ok", what + note)
        db.flush()
        ids += [row.id for row in fresh]
    return sorted(ids), report


@task(name="review-rows", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def review_rows_chunk(results: list[IntakeResult], exifs: list[ExifData], image_set_id: int) -> tuple[list[int], ChunkReport]:
    """Stage 4 for a chunk (one DB transaction)."""
    return upsert_rows(results, exifs, image_set_id)
