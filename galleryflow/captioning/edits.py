"""A person's edits to a draft at the review gate (:class:`DraftEdits`) and their check
against the same normalisers and guardrails as model output (:func:`check_edit`): a
keyword in Title Case is lower-cased, a taken web name made unique, markup blocked. A
reviewer's earlier overrides hold. The tasks that load the row and write an accepted
edit and its proof stay in :mod:`tasks.captioning`; a single edited field clears only
its own faults there (:func:`tasks.proof.record_edit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from galleryflow.captioning.context import build_context, proof_overrides
from galleryflow.captioning.evidence import build_evidence
from galleryflow.captioning.guardrails import Draft, Issue, check_draft
from galleryflow.captioning.rows import EDIT_ALIASES, row_draft_values
from galleryflow.core.settings import Settings
from galleryflow.db.models import Photo


class DraftEdits(BaseModel):
    """A person's changes to a row's draft (``None``: unchanged)."""

    caption: str | None = None
    alt_text: str | None = None
    keywords: list[str] | None = None
    subject: str | None = None
    file_name: str | None = None

    def changed(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class EditResult(BaseModel):
    applied: bool
    issues: list[Issue]
    proof_passed: bool | None = None


def as_edits(edits: DraftEdits | Mapping[str, Any]) -> DraftEdits:
    if isinstance(edits, DraftEdits):
        return edits
    data = {EDIT_ALIASES.get(k, k): v for k, v in edits.items()}
    return DraftEdits.model_validate(data)


def edited_draft(row: Photo, edits: DraftEdits) -> Draft:
    values = row_draft_values(row)
    # Edited values go in as typed: a "../x" must reach the file-name guardrail intact
    # (check_draft only cuts a trailing image extension).
    values.update(edits.changed())
    return Draft.model_validate(values)


def check_edit(session: Session, row: Photo, edits: DraftEdits,
               settings: Settings) -> tuple[Draft, list[Issue]]:
    """The row's draft with ``edits`` merged over it, checked as a person's draft."""
    evidence = build_evidence(row, row.image_set, settings)
    evidence.photographer = {}
    ctx = build_context(session, row, evidence, settings, human=True,
                        overrides=proof_overrides(row.proof))
    return check_draft(edited_draft(row, edits), ctx, human=True)
