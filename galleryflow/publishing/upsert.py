"""The gallery table: one record per uploaded unit, upserted in bulk (keyed on
``File_Name``, so repeating it updates the same gallery row)."""

from __future__ import annotations

from datetime import datetime

from blocks.gallery_db import GalleryConnection, GalleryRecord, UpsertResult
from blocks.targets import PublishTarget
from galleryflow.publishing.journal import UPSERT, PublishJournal
from galleryflow.publishing.units import PublishUnit


def gallery_records(
    units: list[PublishUnit], target: PublishTarget, now: datetime
) -> list[GalleryRecord]:
    """The gallery record of each unit (its derivatives built, its files uploaded)."""
    records = []
    for unit in units:
        d = unit.derivatives
        assert d is not None
        records.append(
            GalleryRecord(
                file_name=unit.file_name,
                source_key=unit.source_key,
                **unit.facts,
                width=d.image.width,
                height=d.image.height,
                thumb_width=d.thumbnail.width,
                thumb_height=d.thumbnail.height,
                image_path=unit.image_dest.relative,
                thumbnail_path=unit.thumb_dest.relative,
                image_url=target.url_for(unit.image_dest),
                thumbnail_url=target.url_for(unit.thumb_dest),
                image_bytes=d.image.size,
                image_sha256=d.image.sha256,
                published_at=now,
            )
        )
    return records


def upsert_records(
    gallery: GalleryConnection,
    where: str,
    journal: PublishJournal,
    units: list[PublishUnit],
    records: list[GalleryRecord],
    now: datetime,
) -> UpsertResult:
    """Upsert ``records`` in one transaction, journalled: the gallery id per file name
    written, and the names the gallery refused (held by another photo or the site)."""
    log_ids = journal.start_many(
        [(u.row_id, UPSERT, u.file_name, None, None) for u in units], target=where
    )
    try:
        result = gallery.upsert(records, now)
    except BaseException as exc:
        journal.finish(log_ids, "failed", f"{type(exc).__name__}: {exc}")
        raise
    refused = [i for i, u in zip(log_ids, units, strict=True) if u.file_name in result.refused]
    if refused:
        journal.finish(refused, "failed", "refused: the name belongs to another gallery row")
    journal.finish([i for i in log_ids if i not in refused], "done")
    return result
