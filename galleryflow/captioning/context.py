"""What a draft for one row is compared with (:func:`build_context`): the captions and
alt texts of the set, of the rows pending review and of what is published, and the web
names already taken; the only captioning module that queries the database, read-only,
so the guardrails themselves stay pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from galleryflow.captioning.draft import DraftContext, Evidence
from galleryflow.captioning.normalise import name_stem
from galleryflow.captioning.rows import edited_fields, row_draft_values
from galleryflow.core.settings import Settings
from galleryflow.core.status import RowStatus
from galleryflow.db.models import Proof, PublishLog, Photo
from galleryflow.db.names import taken_by_other

# Rows whose captions a new caption must not repeat: everything but the discarded.
_COMPARED_STATUSES = [s.value for s in RowStatus if s not in (RowStatus.REJECTED, RowStatus.FAILED)]
# Beyond its own set, a caption is compared with the rows pending review and the site's.
_SITE_STATUSES = [RowStatus.AWAITING_REVIEW.value, RowStatus.APPROVED.value,
                  RowStatus.PUBLISHED.value]
COMPARED_ROWS_LIMIT = 5000  # the newest; beyond that the comparison would dominate the stage


class TakenNames(Collection[str]):
    """Web-name stems used by other rows or already published: asked of the DB when checked.

    Only membership is answered; iterating it yields nothing (it is never listed).
    """

    def __init__(self, session: Session, row_id: int) -> None:
        self.session = session
        self.row_id = row_id

    def __contains__(self, stem: object) -> bool:
        if not isinstance(stem, str):
            return False
        rows = self.session.scalar(
            select(func.count()).select_from(Photo).where(
                Photo.id != self.row_id,
                or_(func.lower(Photo.web_file_name) == stem,
                    func.lower(Photo.web_file_name).like(f"{stem}.%")),
            )
        )
        if rows:
            return True
        if taken_by_other(self.session, self.row_id)(f"{stem}.jpg"):  # reserved (db.names)
            return True
        published = self.session.scalars(
            select(PublishLog.remote_path).where(
                PublishLog.review_id != self.row_id,
                func.lower(PublishLog.remote_path).like(f"%{stem}.%"),
            )
        ).all()
        return any(name_stem(path) == stem for path in published if path)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def proof_overrides(proof: Proof | None) -> dict[tuple[str, str], str]:
    """A reviewer's overrides of false positives recorded in a proof: (field, code) →
    reason. They hold for later drafts and edits of the row."""
    return {(o["field"], o["code"]): o.get("reason") or "overridden"
            for o in (proof.overrides if proof is not None and proof.overrides else [])}


def build_context(session: Session, row: Photo, evidence: Evidence, settings: Settings,
                  human: bool = False,
                  overrides: dict[tuple[str, str], str] | None = None) -> DraftContext:
    """What a draft for ``row`` is compared with: the captions of its set, of the rows
    pending review and of the published ones; the names taken; a reviewer's overrides."""
    others = session.execute(
        select(Photo.caption, Photo.alt_text).where(
            Photo.id != row.id, Photo.caption.is_not(None),
            or_(and_(Photo.set_key == row.set_key, Photo.status.in_(_COMPARED_STATUSES)),
                Photo.status.in_(_SITE_STATUSES)),
        ).order_by(Photo.id.desc()).limit(COMPARED_ROWS_LIMIT)
    ).all()
    current = row_draft_values(row)
    locked = {} if human else {name: current[name] for name in edited_fields(row)}
    return DraftContext.model_construct(
        evidence=evidence,
        other_captions=[c for c, _ in others if c],
        other_alt_texts=[a for _, a in others if a],
        taken_names=TakenNames(session, row.id),
        limits=settings.ollama.limits,
        captioning=settings.captioning,
        locked=locked,
        overrides=overrides or {},
    )
