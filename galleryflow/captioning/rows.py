"""How a :class:`~galleryflow.captioning.guardrails.Draft` maps onto a ``review_queue`` row:
its columns, the fields a person edited, and which rows stage 7 drafts; plain reads of a
row object, kept apart from the tasks that load and write rows.
"""

from __future__ import annotations

from typing import Any

from galleryflow.captioning.guardrails import DRAFT_FIELDS, name_stem
from galleryflow.core.status import RowStatus
from galleryflow.db.models import Photo

STAGE = "captioning"
WEB_SUFFIX = ".jpg"
EDIT_ALIASES = {"web_file_name": "file_name"}
ROW_FIELD = {"caption": "caption", "alt_text": "alt_text", "keywords": "keywords",
             "subject": "subject", "file_name": "web_file_name"}
"""Draft field → ``review_queue`` column."""
ELIGIBLE = frozenset({RowStatus.SCORED, RowStatus.CAPTIONED})


def edited_fields(row: Photo) -> set[str]:
    return {EDIT_ALIASES.get(f, f) for f in (row.edited_fields or [])} & set(DRAFT_FIELDS)


def row_draft_values(row: Photo) -> dict[str, Any]:
    return {
        "caption": row.caption or "", "alt_text": row.alt_text or "",
        "keywords": list(row.keywords or []), "subject": row.subject or "",
        "file_name": name_stem(row.web_file_name) if row.web_file_name else "",
    }


def skip_reason(row: Photo, regenerate: bool) -> str | None:
    """None when the row should be captioned now, else why it is skipped."""
    if row.status in ELIGIBLE:
        return None
    if row.status == RowStatus.FAILED and row.error_category in (STAGE, "model_resize"):
        return None
    if row.status == RowStatus.AWAITING_REVIEW and not regenerate:
        return "already drafted and awaiting review"
    if row.status == RowStatus.NEW:
        return "not scored yet (stage 5 has not run for it)"
    return f"row is {row.status}: left as it is"
