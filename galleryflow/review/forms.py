"""Stage 8's form: what the paused run shows and what a reviewer sends back.

The flow pauses with ``ReviewDecision`` as the form (``flows/gate.py``); Prefect
renders ``rows: list[ReviewRowInput]`` as cards and each ``Literal`` as a dropdown,
pre-filled through ``with_initial_data``, and validates the answer against the
schema server-side. The same input is sent from the terminal (``galleryflow review``,
:mod:`galleryflow.review.answer`), which reads the pre-filled rows from the paused
run's input schema and resumes it through the Prefect API. Spelling in edits is
*flagged* (pyspellchecker plus a project word list), never rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import BaseModel, Field

from galleryflow.core.settings import Settings
from galleryflow.db import Proof, Photo

Decision = Literal["undecided", "approve", "reject", "regenerate"]
Bulk = Literal["none", "approve_passed_reject_rest", "approve_passed", "reject_all"]

EDITABLE = ("caption", "alt_text", "keywords", "web_file_name")
EDIT_FIELD_NAMES = {"web_file_name": "file_name", "file": "file_name", "alt": "alt_text"}
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
    override: str = Field(
        default="",
        description="Guardrail faults you judge false positives, as field:code (or code for "
        "any field), comma-separated, e.g. caption:url. Needs a reason.",
    )
    override_reason: str = Field(default="", description="Why the flagged text is right (recorded)")
    note: str = Field(default="", description="Optional note for the record")

    def overrides(self) -> list[tuple[str, str]]:
        """The (field, code) pairs of ``override``; field ``*`` when only a code is given."""
        pairs = []
        for part in re.split(r"[,;\s]+", self.override.strip()):
            if not part:
                continue
            field, _, code = part.rpartition(":")
            pairs.append((EDIT_FIELD_NAMES.get(field, field) or "*", code))
        return pairs


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
    overrides: list[str] = Field(default_factory=list)  # "field/code: reason", recorded


class DecisionOutcome(BaseModel):
    verdicts: list[RowVerdict] = Field(default_factory=list)

    def ids(self, decision: Decision, applied: bool = True) -> list[int]:
        return [v.row_id for v in self.verdicts if v.decision == decision and v.applied == applied]

    @property
    def rejected_edits(self) -> list[RowVerdict]:
        return [v for v in self.verdicts if not v.applied]


def row_to_input(row: Photo, proof: Proof | None = None) -> ReviewRowInput:
    return ReviewRowInput(
        row_id=row.id, file=f"{row.set_key}/{row.original_name}", summary=row_summary(row, proof),
        caption=row.caption or "", alt_text=row.alt_text or "",
        keywords=", ".join(row.keywords or []), web_file_name=row.web_file_name or "",
    )


def row_issues(row: Photo, proof: Proof | None) -> str:
    """The reviewer's last refusal note and the proof's issues, one line."""
    notes = [f"reviewer: {row.review_note}"] if row.review_note else []
    notes += [f"{i.get('field', '')}: {i.get('message', '')}"
              for i in (proof.issues if proof and proof.issues else [])]
    return "; ".join(notes)


def row_summary(row: Photo, proof: Proof | None) -> str:
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


def build_description(rows: Sequence[Photo], proofs: dict[int, Proof],
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


def sort_for_review(rows: Sequence[Photo]) -> list[Photo]:
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
