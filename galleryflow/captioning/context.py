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
from galleryflow.db.models import Photo, Proof, PublishLog, WebName

# Rows whose captions a new caption must not repeat: everything but the discarded.
_COMPARED_STATUSES = [s.value for s in RowStatus if s not in (RowStatus.REJECTED, RowStatus.FAILED)]
# Beyond its own set, a caption is compared with the rows pending review and the site's.
_SITE_STATUSES = [RowStatus.AWAITING_REVIEW.value, RowStatus.APPROVED.value,
                  RowStatus.PUBLISHED.value]
COMPARED_ROWS_LIMIT = 5000  # the newest; beyond that the comparison would dominate the stage


class TakenNames(Collection[str]):
    """Web-name stems used by other rows or already published: asked of the DB when checked.

    Only membership is answered; iterating it yields nothing (it is never listed).

    A free name is searched for by asking about ``name``, ``name-2``, ``name-3``…
    (:func:`~galleryflow.captioning.normalise.unique_name`), and each question was three
    queries that scan their tables (``lower()`` and a leading ``%`` use no index): with
    many photos drafted under one name (a day at one place) that grew with the square
    of their number. Now the names that begin like the asked stem (its first
    ``PREFIX`` characters) are read once, in three queries, and every variant is
    answered from them. This is a check before drafting; the reservation
    (:mod:`galleryflow.db.names`) still decides who gets a name.
    """

    PREFIX = 8

    def __init__(self, session: Session, row_id: int) -> None:
        self.session = session
        self.row_id = row_id
        self._taken: dict[str, set[str]] = {}  # prefix → taken stems that begin with it

    def __contains__(self, stem: object) -> bool:
        if not isinstance(stem, str):
            return False
        stem = stem.lower()
        prefix = stem[: self.PREFIX]
        if prefix not in self._taken:
            self._taken[prefix] = self._stems_beginning(prefix)
        return stem in self._taken[prefix]

    def _stems_beginning(self, prefix: str) -> set[str]:
        """Every taken stem that begins with ``prefix`` (a LIKE pattern may match more:
        ``_`` is a wildcard; the stems are exact)."""
        taken: set[str] = set()
        for name in self.session.scalars(select(Photo.web_file_name).where(
                Photo.id != self.row_id, func.lower(Photo.web_file_name).like(f"{prefix}%"))):
            if name:  # the name itself and each part of it before a dot (stem.jpg → stem)
                parts = name.lower().split(".")
                taken.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
        for key in self.session.scalars(select(WebName.name_key).where(
                WebName.review_id != self.row_id, WebName.name_key.like(f"{prefix}%"))):
            if key.endswith(".jpg"):  # reserved (db.names): a stem is reserved as stem.jpg
                taken.add(key[: -len(".jpg")])
        for path in self.session.scalars(select(PublishLog.remote_path).where(
                PublishLog.review_id != self.row_id,
                func.lower(PublishLog.remote_path).like(f"%{prefix}%"))):
            if path:
                taken.add(name_stem(path))
        return taken

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
