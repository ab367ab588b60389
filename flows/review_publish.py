"""Flow ``review-publish``, and the gate-then-publish step ``process-sets`` ends with.

The review gate is mandatory: only rows a person approved (with a passing
proof) are published. ``review-publish`` takes up rows left ``awaiting_review``
(a gate that timed out or was ended early) and rows approved but not yet
published (a gallery DB that was down), pauses for review again, then
publishes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel
from sqlalchemy import select

from flows.gate import GateResult, review_gate
from galleryflow.db import Photo, session_scope
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.prefect_run import flow_run_id as current_flow_run_id
from galleryflow.core.progress import flushed
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import RowStatus
from flows.fanout import publish_approved
from galleryflow.publishing.summary import PublishSummary
from tasks.publish import (
    drop_web_images_ahead,
    publishable_row_ids,
    uncommitted_sessions,
    web_images_ahead_while_waiting,
)
from tasks.captioning import regenerate_rows


def _regenerate(row_ids: list[int]) -> None:
    """Stage 7 again for these rows, grouped by the session that holds each row."""

    settings = get_settings()
    by_session: dict[int, list[int]] = defaultdict(list)
    with session_scope() as db:
        for row in db.scalars(select(Photo).where(Photo.id.in_(row_ids))):
            by_session[row.image_set_id].append(row.id)
    for image_set_id, ids in by_session.items():
        regenerate_rows(ids, image_set_id)
        # Regeneration happens after the session committed: nothing to roll back.
        SessionLedger(settings, image_set_id).discard()


def review_and_publish(row_ids: Sequence[int], settings: Settings,
                       flow_run_id: str | None) -> tuple[GateResult, PublishSummary | None]:
    """The gate over ``row_ids``, then publishing what was approved; web images queued
    ahead for rows this publish did not take are dropped at its end."""
    logger = get_run_logger()
    try:
        with web_images_ahead_while_waiting(row_ids, settings):
            gate = review_gate(row_ids, settings, regenerate=_regenerate)
        approved = publishable_row_ids(settings, row_ids=list(row_ids))
        if not approved:
            logger.info("nothing approved to publish")
            return gate, None
        logger.info("publishing %d approved rows", len(approved))
        return gate, publish_approved(approved, settings=settings, flow_run_id=flow_run_id)
    finally:
        drop_web_images_ahead()


class ReviewPublishSummary(BaseModel):
    rows: int
    review: GateResult | None = None
    publish: PublishSummary | None = None


def _waiting_rows(set_names: list[str] | None) -> list[int]:
    with session_scope() as db:
        query = select(Photo.id).where(
            Photo.status.in_([RowStatus.AWAITING_REVIEW, RowStatus.APPROVED]),
            Photo.image_set_id.notin_(uncommitted_sessions()))  # nothing uncommitted
        if set_names:
            query = query.where(Photo.set_key.in_(set_names))
        return list(db.scalars(query.order_by(Photo.id)))


@flow(name="review-publish", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
@flushed
def review_publish(set_names: list[str] | None = None) -> ReviewPublishSummary:
    """Review rows still awaiting review (all sets, or the named ones), then publish."""
    settings = get_settings()
    logger = get_run_logger()
    row_ids = _waiting_rows(set_names)
    if not row_ids:
        logger.info("nothing to do: no rows awaiting review or publishing")
        return ReviewPublishSummary(rows=0)
    review, published = review_and_publish(row_ids, settings, current_flow_run_id())
    return ReviewPublishSummary(rows=len(row_ids), review=review, publish=published)
