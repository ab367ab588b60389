"""Stage 8: the review gate's form, its description, and applying decisions.

The flow pauses with ``pause_flow_run(wait_for_input=ReviewDecision…)``; Prefect
renders ``rows: list[ReviewRowInput]`` as cards and each ``Literal`` as a
dropdown, pre-filled through ``with_initial_data``, and validates the answer
against the schema server-side. The same input can be sent from the terminal
(``galleryflow review``), which reads the pre-filled rows from the paused run's
input schema and resumes it through the Prefect API.

Decisions are validated and written to the DB *before* anything else happens,
so nothing a reviewer decided is lost if the run dies afterwards. Edited text
goes through the same guardrails as model output, the web file name must stay a
safe, unique slug, and spelling is *flagged* (pyspellchecker plus a project
word list), never rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import BaseModel, Field
from sqlalchemy import select

from galleryflow.db import MetadataQuality, ReviewRow, session_scope
from galleryflow.db.models import utcnow
from galleryflow.settings import Settings
from galleryflow.status import ProofStatus, RowStatus

Decision = Literal["undecided", "approve", "reject", "regenerate"]
Bulk = Literal["none", "approve_passed_reject_rest", "approve_passed", "reject_all"]

EDITABLE = ("caption", "alt_text", "keywords", "web_file_name")
WEB_SUFFIX = ".jpg"  # web file names are stored with it (tasks.captioning)

# Words a photographer's captions use that a general dictionary lacks.
PROJECT_WORDS = {
    "bokeh", "golden-hour", "blue-hour", "cityscape", "seascape", "lakeshore", "waterfront",
    "skyline", "backlit", "silhouetted", "telephoto", "panorama", "drone", "alpenglow",
    "treeline", "snowcapped", "mountainside", "hillside", "lakeside", "riverbank", "harbour",
    "colour", "colours", "grey", "centre",
}


class ReviewRowInput(BaseModel):
    """One row of the review form (a card in the Prefect UI)."""

    row_id: int = Field(description="galleryflow row id (do not change)")
    file: str = Field(description="Original file (for reference)")
    summary: str = Field(
        default="", description="Proof, scores and issues (for reference; editing it changes nothing)"
    )
    decision: Decision = Field(default="undecided", description="approve, reject or regenerate")
    caption: str = ""
    alt_text: str = ""
    keywords: str = Field(default="", description="Comma-separated")
    web_file_name: str = ""
    note: str = Field(default="", description="Optional note for the record")


class ReviewDecision(RunInput):
    """What the reviewer sends back for one page of rows."""

    rows: list[ReviewRowInput] = Field(default_factory=list)
    bulk: Bulk = Field(
        default="none",
        description="Applied to rows left 'undecided': approve those whose proof passed "
        "(and reject the rest), or reject all.",
    )
    end_review: bool = Field(
        default=False, description="Stop reviewing: rows still undecided wait for review-publish."
    )
    reviewer: str = Field(default="", description="Your name, for the record")


class RowVerdict(BaseModel):
    row_id: int
    file: str
    decision: Decision
    applied: bool
    issues: list[str] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)  # spelling: reported, never fatal


class DecisionOutcome(BaseModel):
    verdicts: list[RowVerdict] = Field(default_factory=list)

    def ids(self, decision: Decision, applied: bool = True) -> list[int]:
        return [v.row_id for v in self.verdicts if v.decision == decision and v.applied == applied]

    @property
    def rejected_edits(self) -> list[RowVerdict]:
        return [v for v in self.verdicts if not v.applied]


def row_to_input(row: ReviewRow, proof: MetadataQuality | None = None) -> ReviewRowInput:
    return ReviewRowInput(
        row_id=row.id, file=f"{row.set_key}/{row.original_name}", summary=row_summary(row, proof),
        caption=row.caption or "", alt_text=row.alt_text or "",
        keywords=", ".join(row.keywords or []), web_file_name=row.web_file_name or "",
    )


def row_issues(row: ReviewRow, proof: MetadataQuality | None) -> str:
    """The reviewer's last refusal note and the proof's issues, one line."""
    notes = [f"reviewer: {row.review_note}"] if row.review_note else []
    notes += [f"{i.get('field', '')}: {i.get('message', '')}"
              for i in (proof.issues if proof and proof.issues else [])]
    return "; ".join(notes)


def row_summary(row: ReviewRow, proof: MetadataQuality | None) -> str:
    """One line per card: the Prefect UI collapses a long form's Markdown description
    to nothing, so each card carries what a reviewer decides from."""
    parts = [f"proof {row.proof_status}", f"aesthetic {_score(row.clip_aesthetic_score, '{:.2f}')}",
             f"BRISQUE {_score(row.brisque_score)}", f"blur {_score(row.blur_score, '{:.0f}')}"]
    if row.generation_mode == "offline":
        parts.append("offline draft")
    issues = row_issues(row, proof)
    return " · ".join(parts) + (f" · issues: {issues}" if issues else "")


def _score(value: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def _md(text: str | None) -> str:
    """Escape what would break a Markdown table cell."""
    return (text or "").replace("|", "\\|").replace("\n", " ")


def build_description(rows: Sequence[ReviewRow], proofs: dict[int, MetadataQuality],
                      page: int, pages: int, run_hint: str = "") -> str:
    """The Markdown a reviewer decides from: best rows first, with proof issues."""
    lines = [
        f"## Review {page} of {pages}: {len(rows)} photos",
        "Approve, reject or regenerate each row; edit caption, alt text, keywords or file name "
        "in place. Or pick a bulk choice for the rows you leave *undecided*. "
        "Rows whose proof is **blocked** cannot be approved until an edit fixes them.",
        "",
        "| # | photo | aesthetic | BRISQUE | blur | proof | caption | keywords | issues |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows, 1):
        issues = row_issues(row, proofs.get(row.id))
        thumb = row.thumbnail_path or row.ollama_path or row.incoming_path or ""
        photo = f"[{_md(row.original_name)}](file://{thumb})" if thumb else _md(row.original_name)
        lines.append(
            f"| {i} | {photo} | {_score(row.clip_aesthetic_score, '{:.2f}')} | "
            f"{_score(row.brisque_score)} | {_score(row.blur_score, '{:.0f}')} | "
            f"{row.proof_status} | {_md(row.caption)} | {_md(', '.join(row.keywords or []))} | "
            f"{_md(issues)} |"
        )
    if run_hint:
        lines += ["", run_hint]
    return "\n".join(lines)


def sort_for_review(rows: Sequence[ReviewRow]) -> list[ReviewRow]:
    """Best first: aesthetic score high, then BRISQUE low; unscored last."""
    return sorted(
        rows,
        key=lambda r: (
            r.clip_aesthetic_score is None,
            -(r.clip_aesthetic_score or 0.0),
            r.brisque_score if r.brisque_score is not None else 1e9,
            r.set_key, r.original_name,
        ),
    )


@lru_cache(maxsize=4)
def _spellchecker(word_list: str | None) -> Any:
    from spellchecker import SpellChecker

    checker = SpellChecker()
    extra = set(PROJECT_WORDS)
    if word_list and Path(word_list).is_file():
        extra |= {w.strip().lower() for w in Path(word_list).read_text().split() if w.strip()}
    checker.word_frequency.load_words(extra)
    return checker


def spelling_flags(text: str, settings: Settings, known: set[str] = frozenset()) -> list[str]:
    """Words the spellchecker does not know (minus evidence words); never a rewrite."""
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]+", text) if len(w) > 2]
    candidates = {w.lower() for w in words if not w[0].isupper()} - {k.lower() for k in known}
    word_list = str(settings.review.word_list) if settings.review.word_list else None
    unknown = _spellchecker(word_list).unknown(candidates)
    return sorted(f"possible misspelling: {w!r}" for w in unknown)


def _keyword_list(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _stem(name: str) -> str:
    return name[: -len(WEB_SUFFIX)] if name.lower().endswith(WEB_SUFFIX) else name


def _edits(row: ReviewRow, given: ReviewRowInput) -> dict[str, Any]:
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


def _bulk_decision(bulk: Bulk, row: ReviewRow) -> Decision:
    if bulk == "reject_all":
        return "reject"
    if bulk in ("approve_passed", "approve_passed_reject_rest"):
        if row.proof_status == ProofStatus.PASSED:
            return "approve"
        return "reject" if bulk == "approve_passed_reject_rest" else "undecided"
    return "undecided"


def _evidence_words(row: ReviewRow) -> set[str]:
    text = " ".join(x for x in (row.location, row.subject, row.set_key, row.camera_make,
                                row.camera_model) if x)
    return set(re.findall(r"[A-Za-z][A-Za-z'-]+", text.replace("-", " ")))


def _load(row_ids: Sequence[int]) -> dict[int, ReviewRow]:
    with session_scope() as db:
        return {r.id: r for r in db.scalars(select(ReviewRow).where(ReviewRow.id.in_(list(row_ids))))}


def _apply_one_edit(row: ReviewRow, edits: dict[str, Any], verdict: RowVerdict,
                    reviewer: str | None, settings: Settings) -> bool:
    """Edits through the captioning guardrails (tasks.captioning.apply_edit); spelling flagged."""
    from tasks.captioning import apply_edit

    result = apply_edit(row.id, edits, reviewer=reviewer)
    if not result.applied:
        verdict.issues = [f"{i.field}: {i.message}" for i in result.issues
                          if i.blocking and i.field in edits] or ["the edit was not applied"]
        return False
    verdict.flags = [f"{i.field}: {i.message}" for i in result.issues if not i.blocking]
    text = " ".join(str(edits.get(k, "")) for k in ("caption", "alt_text"))
    verdict.flags += spelling_flags(text, settings, known=_evidence_words(row))
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
        fresh = db.get(ReviewRow, row_id)
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
        db.get(ReviewRow, row_id).review_note = note[:4000]
