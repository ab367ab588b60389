"""Stage 8: applying a reviewer's decisions to the rows.

Decisions are validated and written to the DB *before* anything else happens,
so nothing a reviewer decided is lost if the run dies afterwards. Edited text
goes through the same guardrails as model output (``tasks.captioning.apply_edit``),
the web file name must stay a safe, unique slug, and spelling is flagged, never
rewritten. The form itself lives in :mod:`galleryflow.review.forms`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from galleryflow.core.settings import Settings
from galleryflow.core.status import ProofStatus, RowStatus
from galleryflow.db import Photo, session_scope
from galleryflow.db.models import utcnow
from galleryflow.review.forms import (
    WEB_SUFFIX,
    Bulk,
    Decision,
    DecisionOutcome,
    ReviewDecision,
    ReviewRowInput,
    RowVerdict,
    row_to_input,
    spelling_flags,
)
from tasks.captioning import apply_edit, apply_override


def _keyword_list(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _stem(name: str) -> str:
    return name[: -len(WEB_SUFFIX)] if name.lower().endswith(WEB_SUFFIX) else name


def _edits(row: Photo, given: ReviewRowInput) -> dict[str, Any]:
    """The fields the reviewer changed, in the captioning module's edit vocabulary.

    Compared in the form's own terms, so re-spacing the keyword list or dropping
    the ``.jpg`` is not an edit (an edit locks the field against regeneration).
    """
    current = row_to_input(row)
    edits: dict[str, Any] = {}
    for name in ("caption", "alt_text"):
        new = getattr(given, name).strip()
        if new != getattr(current, name).strip():
            edits[name] = new
    keywords = _keyword_list(given.keywords)
    if keywords != _keyword_list(current.keywords):
        edits["keywords"] = keywords
    name = given.web_file_name.strip()
    if _stem(name) != _stem(current.web_file_name.strip()):
        # Stored with its extension; the guardrail checks the slug as typed.
        edits["file_name"] = _stem(name)
    return edits


def _bulk_decision(bulk: Bulk, row: Photo) -> Decision:
    if bulk == "reject_all":
        return "reject"
    if bulk in ("approve_passed", "approve_passed_reject_rest"):
        if row.proof_status == ProofStatus.PASSED:
            return "approve"
        return "reject" if bulk == "approve_passed_reject_rest" else "undecided"
    return "undecided"


def _evidence_words(row: Photo) -> set[str]:
    text = " ".join(x for x in (row.location, row.subject, row.set_key, row.camera_make,
                                row.camera_model) if x)
    return set(re.findall(r"[A-Za-z][A-Za-z'-]+", text.replace("-", " ")))


def _load(row_ids: Sequence[int]) -> dict[int, Photo]:
    with session_scope() as db:
        return {r.id: r for r in db.scalars(select(Photo).where(Photo.id.in_(list(row_ids))))}


def _apply_one_edit(row: Photo, edits: dict[str, Any], verdict: RowVerdict,
                    reviewer: str | None, settings: Settings) -> bool:
    """Edits through the captioning guardrails (tasks.captioning.apply_edit); spelling flagged."""
    result = apply_edit(row.id, edits, reviewer=reviewer)
    if not result.applied:
        verdict.issues = [f"{i.field}: {i.message}" for i in result.issues
                          if i.blocking and i.field in edits] or ["the edit was not applied"]
        return False
    verdict.flags = [f"{i.field}: {i.message}" for i in result.issues if not i.blocking]
    text = " ".join(str(edits.get(k, "")) for k in ("caption", "alt_text"))
    verdict.flags += spelling_flags(text, settings, known=_evidence_words(row))
    return True


def _apply_override(row_id: int, answer: ReviewRowInput, verdict: RowVerdict,
                    reviewer: str | None) -> bool:
    """A reviewer overrides guardrail faults as false positives: the reason is required,
    and the override is recorded in the proof and the verdict (the decisions artifact)."""
    reason = answer.override_reason.strip()
    if not reason:
        verdict.issues = ["an override needs a reason (override_reason)"]
        return False
    pairs = answer.overrides()
    result = apply_override(row_id, pairs, reason, reviewer)
    verdict.overrides = [f"{f}/{c}: {reason}" for f, c in result.overridden]
    if not result.overridden:
        verdict.issues = [f"nothing to override: no current fault {', '.join(f'{f}:{c}' for f, c in pairs)}"]
        return False
    return True


def apply_decisions(decision: ReviewDecision, page_ids: Sequence[int],
                    settings: Settings) -> DecisionOutcome:
    """Validate and write one page of decisions before anything else happens.

    A row of the page the reviewer did not send back counts as *undecided* (the
    bulk choice applies to it); rows not on the page are ignored. An edit that
    fails the guardrails is not applied and its row stays ``awaiting_review``
    with the reasons in ``review_note``; approving a row whose proof has not
    passed is refused the same way. Spelling is flagged in the verdict and the
    row's note, never rewritten. Each row is its own transaction, so one refusal
    never undoes another row's decision; a row decided elsewhere meanwhile (the
    CLI, another reviewer) is left alone.
    """
    page = set(page_ids)
    given = {r.row_id: r for r in decision.rows if r.row_id in page}
    reviewer = decision.reviewer or None
    outcome = DecisionOutcome()
    for row_id, row in sorted(_load(page_ids).items()):
        if row.status != RowStatus.AWAITING_REVIEW:
            continue
        answer = given.get(row_id) or row_to_input(row)
        expected = row_to_input(row).file
        if answer.file.strip() and answer.file.strip() != expected:
            # A card whose row id was changed would put one photo's words on another.
            verdict = RowVerdict(row_id=row_id, file=expected, decision=answer.decision, applied=False,
                                 issues=[f"the card for row {row_id} names {answer.file!r}, not "
                                         f"{expected!r}: ignored (row id and file must not be changed)"])
            outcome.verdicts.append(verdict)
            _note(row_id, verdict.issues[0])
            continue
        choice: Decision = answer.decision
        if choice == "undecided":
            choice = _bulk_decision(decision.bulk, row)
        verdict = RowVerdict(row_id=row_id, file=answer.file or row.original_name,
                             decision=choice, applied=False)
        outcome.verdicts.append(verdict)
        edits = _edits(row, answer)
        if answer.override.strip() and choice != "reject" and not _apply_override(
                row_id, answer, verdict, reviewer):
            _note(row_id, "override refused: " + "; ".join(verdict.issues))
            continue
        if edits and choice != "reject" and not _apply_one_edit(row, edits, verdict, reviewer, settings):
            _note(row_id, "edit refused: " + "; ".join(verdict.issues))
            continue
        if choice in ("undecided", "regenerate"):
            verdict.applied = choice == "regenerate"  # the gate regenerates after this page
            if verdict.flags:
                _note(row_id, "; ".join(verdict.flags))
            continue
        _decide(row_id, choice, verdict, reviewer, answer.note)
    return outcome


def _decide(row_id: int, choice: Decision, verdict: RowVerdict, reviewer: str | None,
            note: str) -> None:
    """Write approve/reject to the row, unless its proof forbids approval."""
    with session_scope() as db:
        fresh = db.get(Photo, row_id)
        if choice == "approve" and fresh.proof_status != ProofStatus.PASSED:
            verdict.issues.append(
                f"the metadata proof is {fresh.proof_status}: edit the flagged fields first")
            fresh.review_note = verdict.issues[-1]
            return
        fresh.status = RowStatus.APPROVED if choice == "approve" else RowStatus.REJECTED
        fresh.reviewer = reviewer
        fresh.decided_at = utcnow()
        fresh.review_note = "; ".join([note.strip()] * bool(note.strip()) + verdict.flags)[:4000] or None
        verdict.applied = True


def _note(row_id: int, note: str) -> None:
    with session_scope() as db:
        db.get(Photo, row_id).review_note = note[:4000]
