"""The publish journal: a ``publish_log`` row around every remote write.

A write is logged ``started`` before it is made and ``done`` or ``failed`` after,
so a rerun knows which uploads and upserts finished; an entry still ``started``
belongs to a run that died during the write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select

from galleryflow.core.settings import Settings
from galleryflow.db import PublishLog, session_scope

UPLOAD_IMAGE = "upload_image"
UPLOAD_THUMB = "upload_thumb"
UPSERT = "upsert"
INTERRUPTED = "interrupted: the run ended during this write (a later run resumed it)"


class PublishJournal:
    """``publish_log`` rows for one chunk: each remote write, around the write."""

    def __init__(
        self, settings: Settings, target: str, flow_run_id: str | None, row_ids: Iterable[int]
    ) -> None:
        self.url = settings.db_url
        self.target = target
        self.flow_run_id = flow_run_id
        with session_scope(self.url) as session:
            # A write still "started" belongs to a run that died during it (a live
            # attempt finishes its entries even when it fails): say so.
            for entry in session.scalars(
                select(PublishLog).where(
                    PublishLog.review_id.in_(list(row_ids)), PublishLog.status == "started"
                )
            ):
                entry.status = "failed"
                entry.detail = INTERRUPTED
            done = session.execute(
                select(
                    PublishLog.review_id,
                    PublishLog.action,
                    PublishLog.remote_path,
                    PublishLog.sha256,
                ).where(
                    PublishLog.review_id.in_(list(row_ids)),
                    PublishLog.target == target,
                    PublishLog.status == "done",
                )
            )
            self.done = {tuple(r) for r in done}

    def was_done(self, review_id: int, action: str, path: str, sha256: str) -> bool:
        return (review_id, action, path, sha256) in self.done

    def start(
        self, review_id: int, action: str, path: str, sha256: str | None, size: int | None
    ) -> int:
        return self.start_many([(review_id, action, path, sha256, size)])[0]

    def start_many(
        self,
        entries: Sequence[tuple[int, str, str, str | None, int | None]],
        target: str | None = None,
    ) -> list[int]:
        with session_scope(self.url) as session:
            rows = [
                PublishLog(
                    review_id=review_id,
                    action=action,
                    target=target or self.target,
                    remote_path=path,
                    sha256=sha256,
                    size=size,
                    status="started",
                    flow_run_id=self.flow_run_id,
                )
                for review_id, action, path, sha256, size in entries
            ]
            session.add_all(rows)
            session.flush()
            return [r.id for r in rows]

    def finish(self, log_ids: Sequence[int], status: str, detail: str | None = None) -> None:
        with session_scope(self.url) as session:
            for entry in session.scalars(
                select(PublishLog).where(PublishLog.id.in_(list(log_ids)))
            ):
                entry.status = status
                entry.detail = detail[:4000] if detail else None
