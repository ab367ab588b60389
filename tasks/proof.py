"""The metadata proof: one ``metadata_quality`` row per image, and two artifacts per set.

The proof says, per row, each draft field's state (:data:`FIELD_STATES`: ``accepted``,
``fixed``, ``unverified``, ``repaired``, ``overridden``, ``blocked``, ``edited``), every
issue the guardrails found (with the attempt and the model that produced it; a
``fixed`` one with ``before`` and ``after``), every attempt (each model request and
what came of it), a reviewer's overrides with their reasons, how many repair prompts
it took, whether a fallback (model or offline captioner) was used and why, the
generation mode, the model and the prompt version. A row that failed in stage 7 (no
model-ready image, file gone) gets a proof too: not passed, ``generation_mode``
``failed``, the reason as its issue. A row whose proof passes is ready for review;
a blocked row goes to review too, with its reasons, and cannot be published
until a person fixes the blocked fields.

Artifacts, per set (keys ``prefill-qc-<set>`` and ``metadata-proof-<set>``):

- **prefill QC summary** (Markdown): duplicates across the set (same or near-same
  captions, shared file names, identical keyword sets), suspicious fields (what
  the guardrails corrected or flagged) and the blocked rows with their reasons;
- **metadata proof summary** (table): one line per row.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from prefect import task
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from galleryflow.db.engine import session_scope
from galleryflow.db.models import ImageSet, Proof, Photo, utcnow
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.settings import get_settings
from galleryflow.captioning.guardrails import DRAFT_FIELDS, Issue, name_stem, similarity
from tasks.rowstate import snapshot_proof

NEAR_DUPLICATE_ROW_LIMIT = 800  # pairwise comparison beyond this would dominate the stage


FIELD_STATES = ("accepted", "fixed", "unverified", "repaired", "overridden", "blocked", "edited")
"""A field's state in the proof (``galleryflow.captioning.guardrails.field_states``):
accepted as drafted; fixed by a normaliser (no model call); unverified (keywords only the
caption names); repaired by a repair prompt; overridden by a reviewer; blocked; edited
by a person."""


class RowProof(BaseModel):
    passed: bool
    field_states: dict[str, str]
    issues: list[dict[str, Any]] = Field(default_factory=list)
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    overrides: list[dict[str, Any]] = Field(default_factory=list)
    repair_attempts: int = 0
    fallback_used: bool = False
    fallback_reason: str | None = None
    generation_mode: str | None = None
    model: str | None = None
    prompt_version: str | None = None

    @property
    def fixes(self) -> list[dict[str, Any]]:
        """What the normalisers changed (before → after), no model call."""
        return [i for i in self.issues if i.get("severity") == "fixed"]

    @property
    def unverified(self) -> list[dict[str, Any]]:
        return [i for i in self.issues if i.get("severity") == "unverified"]


def _proof_of(session: Session, row: Photo) -> Proof | None:
    return session.scalar(select(Proof).where(Proof.review_id == row.id))


def write_proof(session: Session, row: Photo, proof: RowProof,
                ledger: SessionLedger | None = None) -> Proof:
    """Insert or update the row's ``metadata_quality`` (snapshotted first for rollback)."""
    existing = _proof_of(session, row)
    if ledger is not None:
        snapshot_proof(ledger, row, existing)
    if existing is None:
        existing = Proof(review_id=row.id)
        session.add(existing)
    existing.passed = proof.passed
    existing.field_states = dict(proof.field_states)
    existing.issues = list(proof.issues)
    existing.attempts = list(proof.attempts)
    existing.overrides = list(proof.overrides) or list(existing.overrides or [])
    existing.repair_attempts = proof.repair_attempts
    existing.fallback_used = proof.fallback_used
    existing.fallback_reason = proof.fallback_reason
    existing.generation_mode = proof.generation_mode
    existing.model = proof.model
    existing.prompt_version = proof.prompt_version
    return existing


def record_edit(session: Session, row: Photo, changed: dict[str, Any], issues: list[Issue],
                ledger: SessionLedger | None = None) -> bool:
    """Fold a person's edit into the proof; return whether the proof now passes.

    The edited fields become ``edited`` and their earlier issues (about values
    that are gone) are replaced by the edit's own (warnings only: an edit with
    an error is never applied). Fields not edited keep their state.
    """
    existing = _proof_of(session, row)
    if ledger is not None:
        snapshot_proof(ledger, row, existing)
    if existing is None:
        existing = Proof(review_id=row.id, field_states={f: "accepted" for f in DRAFT_FIELDS},
                                   issues=[], generation_mode=row.generation_mode)
        session.add(existing)
    states = dict(existing.field_states or {})
    kept = [i for i in (existing.issues or []) if i.get("field") not in changed]
    for name in changed:
        states[name] = "edited"
    kept += [{**i.model_dump(), "attempt": "edit", "model": None}
             for i in issues if i.field in changed]
    answer_blocked = any(i.get("field") == "answer" and i.get("severity") == "error"
                         for i in kept)
    if answer_blocked and all(states.get(f) == "edited" for f in DRAFT_FIELDS):
        kept = [i for i in kept if i.get("field") != "answer"]  # every field is a person's now
        answer_blocked = False
    existing.field_states = states
    existing.issues = kept
    existing.passed = not answer_blocked and all(s != "blocked" for s in states.values())
    return existing.passed


def record_override(session: Session, row: Photo, codes: list[tuple[str, str]], reason: str,
                    reviewer: str | None, ledger: SessionLedger | None = None) -> bool:
    """A reviewer declares errors false positives: each current error whose (field, code)
    is in ``codes`` (field ``*``: any field) becomes ``overridden`` with the reason, the
    override is recorded (who, when, why), and the proof passes when nothing else blocks.
    Returns whether the proof now passes."""
    existing = _proof_of(session, row)
    if existing is None:
        return False
    if ledger is not None:
        snapshot_proof(ledger, row, existing)
    final = {id(i) for i in _final_issues(existing)}
    wanted = set(codes)
    issues, hit = [], []
    for issue in existing.issues or []:
        key = (issue.get("field"), issue.get("code"))
        if (id(issue) in final and issue.get("severity") == "error"
                and (key in wanted or ("*", key[1]) in wanted)):
            issue = {**issue, "severity": "overridden", "override_reason": reason}
            hit.append(key)
        issues.append(issue)
    if not hit:
        return bool(existing.passed)
    at = utcnow().isoformat(timespec="seconds")
    existing.overrides = [*(existing.overrides or []), *(
        {"field": f, "code": c, "reason": reason, "reviewer": reviewer, "at": at}
        for f, c in dict.fromkeys(hit))]
    states = dict(existing.field_states or {})
    for field in {f for f, _ in hit}:
        still = any(i.get("field") == field and i.get("severity") == "error"
                    and id(i) in final for i in issues)
        if not still and states.get(field) == "blocked":
            states[field] = "overridden"
    existing.issues = issues
    existing.field_states = states
    existing.passed = all(s != "blocked" for s in states.values()) and not any(
        i.get("field") == "answer" and i.get("severity") == "error" for i in issues)
    return existing.passed


def write_failed_proof(session: Session, row: Photo, reason: str,
                       ledger: SessionLedger | None = None) -> Proof:
    """The proof of a row stage 7 could not draft (no model-ready image, file gone)."""
    issue = {"code": "row_failed", "field": "answer", "message": reason, "severity": "error",
             "attempt": 0, "model": None}
    return write_proof(session, row, RowProof(
        passed=False, field_states={f: "blocked" for f in DRAFT_FIELDS}, issues=[issue],
        generation_mode="failed", fallback_reason=reason,
    ), ledger)


# --------------------------------------------------------------------------- summaries


class ProofSummary(BaseModel):
    set_key: str
    rows: int = 0
    passed: int = 0
    blocked: int = 0
    repaired: int = 0
    failed: int = 0
    fixed: int = 0
    unverified: int = 0
    overridden: int = 0
    fallback_model: int = 0
    offline: int = 0
    duplicates: list[str] = Field(default_factory=list)
    suspicious: dict[str, list[str]] = Field(default_factory=dict)
    blocked_rows: list[dict[str, str]] = Field(default_factory=list)
    table: list[dict[str, Any]] = Field(default_factory=list)


def _final_issues(proof: Proof) -> list[dict[str, Any]]:
    issues = proof.issues or []
    attempts = [i.get("attempt") for i in issues if isinstance(i.get("attempt"), int)]
    last = max(attempts) if attempts else None
    return [i for i in issues if i.get("attempt") in (last, "edit", 0)]


def summarise_set(session: Session, set_key: str) -> ProofSummary:
    threshold = get_settings().ollama.limits.similarity_threshold
    pairs = session.execute(
        select(Photo, Proof)
        .join(Proof, Proof.review_id == Photo.id)
        .where(Photo.set_key == set_key)
        .order_by(Photo.original_name)
    ).all()
    summary = ProofSummary(set_key=set_key, rows=len(pairs))
    suspicious: dict[str, list[str]] = defaultdict(list)
    for row, proof in pairs:
        final = _final_issues(proof)
        failed = proof.generation_mode == "failed"
        summary.failed += failed
        summary.passed += proof.passed
        summary.blocked += not proof.passed and not failed
        states = proof.field_states or {}
        summary.fixed += "fixed" in states.values()
        summary.unverified += "unverified" in states.values()
        summary.overridden += bool(proof.overrides)
        summary.repaired += proof.repair_attempts > 0
        summary.offline += proof.generation_mode == "offline"
        summary.fallback_model += proof.generation_mode == "fallback-model"
        errors = sorted({i["message"] for i in final if i.get("severity") == "error"})
        if not proof.passed:
            summary.blocked_rows.append({"file": row.original_name,
                                         "reasons": ("FAILED: " if failed else "")
                                         + ("; ".join(errors) or "blocked")})
        for issue in final:
            if issue.get("severity") in ("fixed", "warning", "unverified", "overridden"):
                suspicious[issue["code"]].append(f"{row.original_name}: {issue['message']}")
        if proof.generation_mode == "offline":
            suspicious["offline_draft"].append(f"{row.original_name}: drafted offline, no model")
        summary.table.append({
            "file": row.original_name,
            "proof": "passed" if proof.passed else "failed" if failed else "blocked",
            "mode": proof.generation_mode or "",
            "model": proof.model or "",
            "repairs": proof.repair_attempts,
            "fallback": (proof.fallback_reason or "yes")[:120] if proof.fallback_used else "",
            "blocked_fields": ", ".join(f for f, s in states.items() if s == "blocked"),
            "repaired_fields": ", ".join(f for f, s in states.items() if s == "repaired"),
            "fixed_fields": ", ".join(f for f, s in states.items() if s == "fixed"),
            "unverified_fields": ", ".join(f for f, s in states.items() if s == "unverified"),
            "overrides": "; ".join(f"{o.get('field')}/{o.get('code')}: {o.get('reason')}"
                                   for o in proof.overrides or [])[:300],
            "web_file_name": row.web_file_name or "",
            "issues": "; ".join(errors)[:300],
        })
    summary.suspicious = dict(suspicious)
    summary.duplicates = find_duplicates([row for row, _ in pairs], threshold)
    return summary


def find_duplicates(rows: list[Photo], threshold: float) -> list[str]:
    """Same or near-same captions (content words, any order), shared web names, identical
    keyword sets, exact duplicate photos (one sha256), in words."""
    found: list[str] = []
    by_name: dict[str, list[str]] = defaultdict(list)
    by_keywords: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for row in rows:
        if row.web_file_name:
            by_name[name_stem(row.web_file_name)].append(row.original_name)
        if row.keywords:
            by_keywords[tuple(sorted(row.keywords))].append(row.original_name)
    by_content: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_content[row.sha256].append(row.original_name)
    for files in by_content.values():
        if len(files) > 1:
            found.append(f"{', '.join(files)} are the same photo (one sha256): captioned once")
    for stem, files in by_name.items():
        if len(files) > 1:
            found.append(f"web name “{stem}” is shared by {', '.join(files)}")
    for keywords, files in by_keywords.items():
        if len(files) >= 3:
            found.append(f"{len(files)} photos have the same keywords ({', '.join(keywords)[:80]})")
    captioned = [r for r in rows if r.caption][:NEAR_DUPLICATE_ROW_LIMIT]
    for i, a in enumerate(captioned):
        for b in captioned[i + 1:]:
            score = similarity(a.caption or "", b.caption or "")
            if score >= threshold:
                found.append(f"captions of {a.original_name} and {b.original_name} are "
                             f"{score:.0%} the same")
    return found


def prefill_qc_markdown(summary: ProofSummary) -> str:
    lines = [
        f"# Prefill QC — {summary.set_key}",
        "",
        f"{summary.rows} rows: **{summary.passed} passed**, **{summary.blocked} blocked**, "
        f"**{summary.failed} failed**; {summary.fixed} had cosmetic faults fixed without a model "
        f"call, {summary.unverified} have unverified keywords, {summary.overridden} carry a "
        f"reviewer's override; {summary.repaired} needed repair prompts, "
        f"{summary.fallback_model} used the fallback model, {summary.offline} were drafted "
        "offline.",
        "",
        "## Duplicates",
    ]
    lines += [f"- {d}" for d in summary.duplicates] or ["- none found"]
    lines += ["", "## Suspicious fields (corrected or flagged by the guardrails)"]
    if summary.suspicious:
        for code, examples in sorted(summary.suspicious.items()):
            lines.append(f"- **{code}** ({len(examples)}): " + "; ".join(examples[:3])
                         + (" …" if len(examples) > 3 else ""))
    else:
        lines.append("- none")
    lines += ["", "## Blocked rows"]
    if summary.blocked_rows:
        lines += ["| file | reasons |", "|---|---|"]
        lines += [f"| {b['file']} | {_cell(b['reasons'])} |" for b in summary.blocked_rows]
    else:
        lines.append("- none")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def artifact_key(prefix: str, set_key: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", set_key.lower()).strip("-")[:60] or "set"
    return f"{prefix}-{slug}"


@task(name="metadata-proof-artifacts")
def publish_proof_artifacts(image_set_id: int) -> ProofSummary:
    """The prefill QC summary and the metadata proof summary of the session's set."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    with session_scope() as session:
        image_set = session.get(ImageSet, image_set_id)
        if image_set is None:
            raise ValueError(f"no image set with id {image_set_id}")
        summary = summarise_set(session, image_set.set_key)
    create_markdown_artifact(
        markdown=prefill_qc_markdown(summary), key=artifact_key("prefill-qc", summary.set_key),
        description=f"Prefill QC for {summary.set_key}: {summary.blocked} blocked of {summary.rows}",
    )
    counts = Counter(row["proof"] for row in summary.table)
    create_table_artifact(
        table=summary.table or [{"file": "", "proof": "no rows drafted"}],
        key=artifact_key("metadata-proof", summary.set_key),
        description=f"Metadata proof for {summary.set_key}: {counts.get('passed', 0)} passed, "
        f"{counts.get('blocked', 0)} blocked",
    )
    return summary
