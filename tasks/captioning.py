"""Stage 7's tasks: captions, alt text, keywords, subject and web file name from a
vision model, and the rows they are written to.

For each row the real ``ollama`` client sends the model-ready image with a prompt
carrying the row's evidence (EXIF date and time of day, camera, GPS or the set's
location, the set's subject hint) as a JSON *data* block, and asks for
structured output: ``format`` is the JSON schema of :class:`Draft`. Every answer
goes through the guardrails (:mod:`galleryflow.captioning.guardrails`). A draft that fails gets up
to ``settings.ollama.repair_attempts`` repair prompts naming its faults, then the
fallback model (if configured and present) with the same budget, then the row is
*blocked* with its reasons. Either way the proof (:mod:`tasks.proof`) records
what happened and the row moves ``scored → captioned → awaiting_review``.

The plain parts live in :mod:`galleryflow.captioning`: the prompts and the request
(``prompts``), the client and its retries (``client``), the start-of-stage check
(``plan``), the evidence and what a draft is compared with (``evidence``,
``context``), the draft/row mapping (``rows``), the repair loop and the offline
captioner (``drafting``) and a person's edits (``edits``). This module holds the
Prefect tasks and the row I/O around them.

Requests: connection errors, timeouts and 5xx answers are retried with
exponential backoff (``request_retries``, ``retry_backoff_seconds``); an error
that persists raises :class:`~galleryflow.core.stages.StageError`, which rolls the session
back. Answers are cached by Prefect (:data:`ANSWER_CACHE`) on the image's
sha256, the model and its digest, the prompt version, the evidence and the
repair history, so a rerun after a rollback asks the model nothing it already
answered. The cached computation (:func:`ask_model`) is separate from the writer
(:func:`caption_chunk`), which is never cached.

Concurrency: a chunk of rows holds one slot of the global concurrency limit
``ollama`` for all its requests. A slot per request would cost two requests
to the Prefect server per row, and a chunk waiting for the slot another run frees
asks again within ~1 s (the server's Retry-After, capped in
:mod:`galleryflow.core.prefect_env`), so the model could idle between rows.
The limit is created (``settings.ollama.concurrency_limit`` slots) when the stage
starts if it does not exist; acquisition is non-strict, so a limit deleted
meanwhile neither hangs nor fails a run.

Public API for the flow and the review gate: :func:`start_captioning`,
:func:`caption_chunk`, :func:`regenerate_rows`, :func:`validate_edit`,
:func:`apply_edit`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from pydantic import BaseModel
from prefect.cache_policies import TASK_SOURCE
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from galleryflow.captioning.client import ModelReply, Transport, request_answer
from galleryflow.captioning.context import build_context, proof_overrides
from galleryflow.captioning.drafting import RowOutcome, draft_offline, draft_with_model
from galleryflow.captioning.edits import DraftEdits, EditResult, as_edits, check_edit
from galleryflow.captioning.evidence import build_evidence, lacks_location
from galleryflow.captioning.guardrails import Draft, DraftContext, Issue
from galleryflow.captioning.normalise import make_unique
from galleryflow.captioning.plan import CaptionPlan, prepare_plan
from galleryflow.captioning.prompts import ModelCall, system_prompt
from galleryflow.captioning.rows import ROW_FIELD, STAGE, WEB_SUFFIX, edited_fields, skip_reason
from galleryflow.core.caching import VOLATILE_FIELDS, ContentInputs
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.prefect_run import limit_slot, run_logger
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.stages import ChunkReport
from galleryflow.core.status import ProofStatus, RowStatus
from galleryflow.db.engine import session_scope
from galleryflow.db.models import Photo, Proof
from galleryflow.db.names import reserve
from tasks.model_resize import model_image_path, resize_rows
from tasks.publish import make_web_images_ahead
from tasks.proof import RowProof, record_edit, record_override, write_failed_proof, write_proof
from tasks.rowstate import snapshot_proof, snapshot_row

__all__ = [
    "Draft", "CaptionPlan", "start_captioning", "caption_chunk", "regenerate_rows",
    "validate_edit", "apply_edit", "apply_override", "DraftEdits", "EditResult", "OverrideResult",
]

# --------------------------------------------------------------------------- the cached call

ANSWER_CACHE = ContentInputs(exclude=VOLATILE_FIELDS | {"transport", "file"}) + TASK_SOURCE
"""Content policy for model answers: image sha256, model + digest, prompt version, evidence,
repair history and options. The endpoint (host, timeouts) and the file's path are not in it."""


@task(name="ask-vision-model", cache_policy=ANSWER_CACHE, persist_result=True,
      log_prints=False)
def ask_model(call: ModelCall, transport: Transport) -> ModelReply:
    """The model's answer to one request (cached: see :data:`ANSWER_CACHE`)."""
    return request_answer(call, transport)


# --------------------------------------------------------------------------- the plan


@task(name="start-captioning", retries=0, persist_result=False)  # the plan may hold a secret
def start_captioning(image_set_id: int | None = None) -> CaptionPlan:
    """Stage 7 start: endpoint check (fail fast), model placement logged once, the limit.

    Raises :class:`StageError` when Ollama is unreachable (and offline mode is not
    allowed) or lacks the model. Pass the returned plan to every chunk.
    """
    return prepare_plan(get_settings())


# --------------------------------------------------------------------------- the writer


def _frame_index(session: Session, row: Photo) -> int:
    """Position of the photo in its set (by name): varies the offline captioner's wording."""
    return int(session.scalar(
        select(func.count()).select_from(Photo).where(
            Photo.set_key == row.set_key, Photo.original_name < row.original_name
        )
    ) or 0)


def write_outcome(session: Session, row: Photo, outcome: RowOutcome, ledger: SessionLedger,
                  plan: CaptionPlan) -> None:
    """Drafts into the row (never over a person's edits), the proof, and the status moves."""
    snapshot_row(ledger, row)
    locked = edited_fields(row)
    if outcome.draft is not None:
        values = outcome.draft.model_dump()
        for name, column in ROW_FIELD.items():
            if name in locked:
                continue
            value = values[name]
            if name == "file_name":
                value = f"{value}{WEB_SUFFIX}" if value else None
            setattr(row, column, value)
    row.generation_mode = outcome.generation_mode
    row.error = None
    row.error_category = None
    row.status = RowStatus.CAPTIONED
    _reserve_web_name(session, row, outcome, locked)
    write_proof(session, row, RowProof(
        passed=outcome.passed, field_states=outcome.field_states, issues=outcome.issues,
        attempts=outcome.attempts, repair_attempts=outcome.repair_attempts, fallback_used=outcome.fallback_used,
        fallback_reason=outcome.fallback_reason, generation_mode=outcome.generation_mode,
        model=outcome.model, prompt_version=plan.prompt_version,
    ), ledger)
    row.proof_status = ProofStatus.PASSED if outcome.passed else ProofStatus.BLOCKED
    row.status = RowStatus.AWAITING_REVIEW


def _reserve_web_name(session: Session, row: Photo, outcome: RowOutcome, locked: set[str]) -> None:
    """Reserve the accepted draft's web name for this row (galleryflow.db.names).

    The reservation, not the read of taken names before drafting, decides: a
    concurrent chunk (or run, or worker) that got the name first wins, and this row
    takes the next free ``-2``, ``-3``… variant, recorded in its proof as a fix. A
    name a person chose is never renamed: the row's proof is blocked instead.
    """
    name = row.web_file_name
    if not name:
        return
    session.flush()  # the row has its id
    if reserve(session, row.id, name) is None:
        return
    other = f"web file name {name} was reserved by another photo meanwhile"
    if "file_name" in locked:
        outcome.passed = False
        outcome.field_states = {**outcome.field_states, "file_name": "blocked"}
        outcome.issues.append({"code": "duplicate_file_name", "field": "file_name",
                               "severity": "error", "message": f"{other}; choose another name",
                               "attempt": 0, "model": None})
        return
    stem = name[: -len(WEB_SUFFIX)] if name.endswith(WEB_SUFFIX) else name
    limit = get_settings().ollama.limits.file_name_max_chars
    for n in range(2, 1000):
        suffix = f"-{n}"
        candidate = f"{stem[: max(1, limit - len(suffix))].rstrip('-')}{suffix}{WEB_SUFFIX}"
        if reserve(session, row.id, candidate) is None:
            row.web_file_name = candidate
            outcome.issues.append({"code": "file_name_made_unique", "field": "file_name",
                                   "severity": "fixed", "message": f"{other}: {candidate} instead",
                                   "attempt": 0, "model": None})
            return
    outcome.passed = False
    outcome.field_states = {**outcome.field_states, "file_name": "blocked"}
    outcome.issues.append({"code": "duplicate_file_name", "field": "file_name", "severity": "error",
                           "message": f"{other}, and no free variant was found", "attempt": 0,
                           "model": None})


def _fail_row(session: Session, row: Photo, ledger: SessionLedger, message: str) -> None:
    """The row failed in stage 7: its status and error, and a proof saying why."""
    snapshot_row(ledger, row)
    row.status = RowStatus.FAILED
    row.error = message
    row.error_category = STAGE
    row.proof_status = ProofStatus.BLOCKED
    write_failed_proof(session, row, message, ledger)


_warned_no_location: set[str] = set()


def _warn_no_location(set_key: str, evidence_has_place: bool) -> None:
    """Once per set and process: no location, GPS or configured place was given."""
    if evidence_has_place or set_key in _warned_no_location:
        return
    _warned_no_location.add(set_key)
    run_logger().warning(
        "Set %s: no location was given (no GPS, no set location, no GALLERYFLOW_LOCATION): "
        "drafts will not say where its photos were taken, and a draft that names a place is "
        "blocked. Give the set a location to let captions name it.", set_key)


def _ensure_model_images(row_ids: list[int], image_set_id: int, settings: Settings) -> None:
    """Make the model-ready image of any row that lacks it (regenerate after a cleanup)."""
    missing = []
    with session_scope() as session:
        for row in session.scalars(select(Photo).where(Photo.id.in_(row_ids))):
            expected = model_image_path(settings, row.set_key, row.original_name, row.sha256)
            if not row.ollama_path or not Path(row.ollama_path).is_file() or (
                Path(row.ollama_path) != expected and not expected.is_file()
            ):
                missing.append(row.id)
    if missing:
        resize_rows(missing, image_set_id, settings)


def keep_previous(session: Session, row: Photo, outcome: RowOutcome, ledger: SessionLedger) -> None:
    """Regenerate gave a worse draft than the passing one the row had: keep the row's
    draft and proof, and add the attempt and why it was not taken to the proof."""
    snapshot_row(ledger, row)
    existing = session.scalar(select(Proof).where(Proof.review_id == row.id))
    snapshot_proof(ledger, row, existing)
    if existing is not None:
        reasons = sorted({i["message"] for i in outcome.issues if i.get("severity") == "error"})
        existing.issues = [*(existing.issues or []), {
            "code": "regenerate_kept_previous", "field": "answer", "severity": "warning",
            "attempt": "regenerate", "model": outcome.model,
            "message": "the regenerated draft was blocked (" + "; ".join(reasons)[:300]
            + "): the previous passing draft is kept"}]
        existing.attempts = [*(existing.attempts or []),
                             *({**a, "regenerate": True} for a in outcome.attempts)]
    row.status = RowStatus.CAPTIONED
    row.proof_status = ProofStatus.PASSED
    row.status = RowStatus.AWAITING_REVIEW


AHEAD_EVERY = 8
"""Rows drafted between two hand-overs to the web-image worker: it starts with the first
drafts, not after a whole chunk (an offline chunk is 128 rows)."""

_OFFLINE_DRAFTING = threading.Lock()
"""Offline drafting is pure Python (templates, guardrails, name checks) plus short writes
to the state database, so chunks side by side on the flow's threads only take turns on
the GIL and the database's write lock (500 small photos: 12.5-13.1 s for the stage four
at a time, 11.7-12.4 s one after another, beside a whole run of ~32 s). Chunks of
other processes (a second worker, a concurrent run) still draft side by side; the web-name
reservations decide between them (:func:`_reserve_web_name`)."""


def caption_rows(row_ids: list[int], image_set_id: int, plan: CaptionPlan | None = None,
                 progress: StageProgress | None = None,
                 previous: Mapping[int, str | None] | None = None,
                 passed_before: frozenset[int] = frozenset()) -> ChunkReport:
    """Stage 7 for some rows (the body of :func:`caption_chunk` and :func:`regenerate_rows`).

    Photos with the same content (one sha256) get one caption call: the first is
    drafted, the others get its draft under their own web names. ``passed_before``
    (regenerate): rows whose previous draft passed keep it when the new one is blocked.
    """
    settings = get_settings()
    plan = plan or prepare_plan(settings, quiet=True)
    ledger = SessionLedger(settings, image_set_id)
    report = ChunkReport(stage=STAGE)
    regenerate = previous is not None
    _ensure_model_images(row_ids, image_set_id, settings)
    todo: list[int] = []
    first_of: dict[str, int] = {}
    copies: dict[int, int] = {}  # row id → the row with the same photo that is drafted
    with session_scope() as session:
        for row in session.scalars(select(Photo).where(Photo.id.in_(row_ids))
                                   .order_by(Photo.original_name)):
            why = skip_reason(row, regenerate)
            if why:
                report.add(row.original_name, "skipped", why)
                if progress:
                    progress.advance()
            else:
                todo.append(row.id)
                if row.sha256 in first_of:
                    copies[row.id] = first_of[row.sha256]
                else:
                    first_of[row.sha256] = row.id
    if not todo:
        return report
    outcomes: dict[int, RowOutcome] = {}

    def each() -> None:
        drafted: list[int] = []
        for row_id in todo:
            source = outcomes.get(copies[row_id]) if row_id in copies else None
            outcome = _caption_one(row_id, plan, settings, ledger, report, previous,
                                   passed_before, copy_of=source)
            if outcome is not None:
                outcomes[row_id] = outcome
            if progress:
                progress.advance()
            drafted.append(row_id)
            if len(drafted) == AHEAD_EVERY:
                # The publish's decode and resize, started now on the core this stage
                # leaves idle (one worker per process, in turn).
                make_web_images_ahead(drafted, settings)
                drafted = []
        if drafted:
            make_web_images_ahead(drafted, settings)

    if plan.mode == "offline":
        # One offline chunk at a time per process (see _OFFLINE_DRAFTING).
        with _OFFLINE_DRAFTING:
            each()
    else:
        # One slot for the whole chunk (see the module docstring).
        with limit_slot("ollama", settings.ollama.slot_wait_seconds):
            each()
    return report


def _copied(outcome: RowOutcome, ctx: DraftContext, source_name: str) -> RowOutcome:
    """The draft of the same photo under another file, under a web name of its own."""
    if outcome.draft is None:
        return outcome
    name, fixed = make_unique(outcome.draft.file_name, ctx.is_taken, ctx.evidence.taken_at,
                              ctx.limits.file_name_max_chars)
    note = Issue(code="duplicate_photo", field="answer", severity="warning",
                 message=f"the same photo as {source_name} (one sha256): its draft is used, "
                 "no model call")
    issues = [i for i in outcome.issues if i.get("field") != "file_name"
              or i.get("severity") == "error"]
    issues += [{**i.model_dump(exclude_none=True), "attempt": outcome.requests,
                "model": outcome.model} for i in (note, *fixed)]
    states = dict(outcome.field_states)
    if fixed and states.get("file_name") == "accepted":
        states["file_name"] = "fixed"
    return outcome.model_copy(update={
        "draft": outcome.draft.model_copy(update={"file_name": name}), "issues": issues,
        "field_states": states, "attempts": []})


def _caption_one(row_id: int, plan: CaptionPlan, settings: Settings, ledger: SessionLedger,
                 report: ChunkReport, previous: Mapping[int, str | None] | None,
                 passed_before: frozenset[int] = frozenset(),
                 copy_of: RowOutcome | None = None) -> RowOutcome | None:
    """Draft one row and write it; every row that enters here leaves with a proof."""
    with session_scope() as session:
        row = session.get(Photo, row_id)
        if row is None:
            return None
        if not row.ollama_path or not Path(row.ollama_path).is_file():
            _fail_row(session, row, ledger, f"{row.original_name}: no model-ready image "
                      f"({row.ollama_path or 'none made'}); see stage 6")
            report.add(row.original_name, "failed", row.error or "")
            return None
        evidence = build_evidence(row, row.image_set, settings,
                                  previous_caption=(previous or {}).get(row_id))
        _warn_no_location(row.set_key, not lacks_location(evidence))
        ctx = build_context(session, row, evidence, settings, overrides=proof_overrides(row.proof))
        if copy_of is not None:
            source = session.scalar(select(Photo.original_name).join(Proof).where(
                Photo.sha256 == row.sha256, Photo.set_key == row.set_key, Photo.id != row.id)
                .order_by(Photo.original_name).limit(1)) or "another file"
            outcome = _copied(copy_of, ctx, source)
        elif plan.mode == "offline":
            outcome = draft_offline(row, ctx, plan, settings, _frame_index(session, row))
        else:
            if plan.endpoint is None:
                raise ValueError("a model plan without an endpoint")
            call_base = {
                "image_sha256": row.sha256,
                "image_variant": f"{settings.model_resize.long_edge}q{settings.model_resize.quality}",
                "ollama_path": row.ollama_path,
                "system": system_prompt(settings),
                "evidence": evidence.prompt_data(),
                "options": dict(plan.endpoint.options),
                "file": row.original_name,
            }
            transport = Transport(endpoint=plan.endpoint, retries=settings.ollama.request_retries,
                                  backoff_seconds=settings.ollama.retry_backoff_seconds)
            try:
                outcome = draft_with_model(call_base, ctx, plan, transport,
                                           settings.ollama.repair_attempts, ask=ask_model)
            except FileNotFoundError as exc:
                _fail_row(session, row, ledger, str(exc))
                report.add(row.original_name, "failed", str(exc))
                return None
        if row_id in passed_before and not outcome.passed:
            keep_previous(session, row, outcome, ledger)
            report.add(row.original_name, "warning", "regenerated draft was blocked: the "
                       "previous passing draft is kept")
            return outcome
        write_outcome(session, row, outcome, ledger, plan)
        report.add(row.original_name, *outcome.report_line())
        return outcome



@task(name="caption-chunk", retries=0)
def caption_chunk(row_ids: list[int], image_set_id: int, plan: CaptionPlan | None = None,
                  progress: StageProgress | None = None) -> ChunkReport:
    """Stage 7 for one chunk: drafts, guardrails, repairs, proof; rows → ``awaiting_review``.

    Holds one ``ollama`` concurrency slot for the chunk. Rows not ``scored`` (or
    ``captioned``, or failed in stages 6–7) are skipped and reported. Raises
    :class:`StageError` when the model server keeps failing (the session rolls back).
    """
    return caption_rows(row_ids, image_set_id, plan, progress)


# --------------------------------------------------------------------------- the review gate


@task(name="regenerate-rows", retries=0)
def regenerate_rows(row_ids: list[int], image_set_id: int,
                    plan: CaptionPlan | None = None) -> ChunkReport:
    """Send rows back through stage 7 (the reviewer's *regenerate*).

    Each row's current caption is kept as evidence ("previous caption"): the new
    one must differ from it and from the set's other captions, and the cache key
    changes with it, so the model is asked afresh. Fields a person edited stay.
    """
    settings = get_settings()
    plan = plan or prepare_plan(settings)  # first: a dead server must not strand rows at scored
    ledger = SessionLedger(settings, image_set_id)
    previous: dict[int, str | None] = {}
    passed: set[int] = set()
    with session_scope() as session:
        for row in session.scalars(select(Photo).where(Photo.id.in_(row_ids))):
            if row.status in (RowStatus.AWAITING_REVIEW, RowStatus.CAPTIONED):
                snapshot_row(ledger, row)
                previous[row.id] = row.caption if "caption" not in edited_fields(row) else None
                if row.proof_status == ProofStatus.PASSED:
                    passed.add(row.id)
                row.status = RowStatus.SCORED
                row.proof_status = ProofStatus.PENDING
    return caption_rows(row_ids, image_set_id, plan, previous=previous,
                        passed_before=frozenset(passed))


def validate_edit(row: Photo, edits: DraftEdits | Mapping[str, Any],
                  session: Session | None = None) -> list[Issue]:
    """The guardrails on a person's edits merged over the row's draft (nothing written).

    Same checks as model output, with the row's set and the names already taken;
    a person's keyword without evidence is a warning, not dropped. Issues with
    ``severity == "error"`` must be fixed before the edit can stand.
    """
    edits = as_edits(edits)
    settings = get_settings()
    if session is None:
        with session_scope() as own:
            fresh = own.get(Photo, row.id)
            if fresh is None:
                raise ValueError(f"review row {row.id} no longer exists")
            return check_edit(own, fresh, edits, settings)[1]
    return check_edit(session, row, edits, settings)[1]


def apply_edit(row_id: int, edits: DraftEdits | Mapping[str, Any], image_set_id: int | None = None,
               reviewer: str | None = None) -> EditResult:
    """Validate a person's edits and, when no error is found, write them and update the proof.

    Edited fields join ``edited_fields`` (later regenerations leave them alone);
    their proof state becomes ``edited``; the proof passes when no field is left
    blocked. Nothing is written when an edited field has an error.
    """
    edits = as_edits(edits)
    changed = edits.changed()
    settings = get_settings()
    with session_scope() as session:
        row = session.get(Photo, row_id)
        if row is None:
            raise ValueError(f"review row {row_id} does not exist")
        draft, issues = check_edit(session, row, edits, settings)
        if any(i.blocking and i.field in changed for i in issues) or not changed:
            return EditResult(applied=False, issues=issues)
        if "file_name" in changed and draft.file_name:
            # The edited name is reserved for this row before anything is written.
            if reserve(session, row.id, f"{draft.file_name}{WEB_SUFFIX}") is not None:
                return EditResult(applied=False, issues=[*issues, Issue(
                    code="duplicate_file_name", field="file_name",
                    message=f"file name “{draft.file_name}” is already reserved by another "
                            "photo; add a word that tells this photo apart")])
        if image_set_id is not None:
            snapshot_row(SessionLedger(settings, image_set_id), row)
        values = draft.model_dump()
        for name in changed:
            value = values[name]
            setattr(row, ROW_FIELD[name], f"{value}{WEB_SUFFIX}" if name == "file_name" else value)
        row.edited_fields = sorted(edited_fields(row) | set(changed))
        if reviewer:
            row.reviewer = reviewer
        passed = record_edit(session, row, changed, issues,
                             SessionLedger(settings, image_set_id) if image_set_id else None)
        row.proof_status = ProofStatus.PASSED if passed else ProofStatus.BLOCKED
        return EditResult(applied=True, issues=issues, proof_passed=passed)



class OverrideResult(BaseModel):
    overridden: list[tuple[str, str]]
    proof_passed: bool


def apply_override(row_id: int, codes: list[tuple[str, str]], reason: str,
                   reviewer: str | None = None, image_set_id: int | None = None) -> OverrideResult:
    """A reviewer declares guardrail errors false positives (the reviewer is the final
    authority): each current error matching a (field, code) pair becomes ``overridden``
    with the reason, the override is recorded in the proof (who, when, why) and holds for
    later drafts and edits of the row. ``reason`` is required."""
    if not reason.strip():
        raise ValueError("an override needs a reason")
    settings = get_settings()
    with session_scope() as session:
        row = session.get(Photo, row_id)
        if row is None:
            raise ValueError(f"review row {row_id} does not exist")
        ledger = SessionLedger(settings, image_set_id) if image_set_id is not None else None
        proof = session.scalar(select(Proof).where(Proof.review_id == row.id))
        before = len(proof.overrides or []) if proof is not None else 0
        passed = record_override(session, row, codes, reason.strip(), reviewer, ledger)
        after = (proof.overrides or [])[before:] if proof is not None else []
        if after:
            row.proof_status = ProofStatus.PASSED if passed else ProofStatus.BLOCKED
        return OverrideResult(overridden=[(o["field"], o["code"]) for o in after],
                              proof_passed=passed)
