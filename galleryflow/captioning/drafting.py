"""Drafting one row: ask, check against the guardrails, repair (bounded), fall back,
or block (:func:`draft_with_model`), and the offline captioner under the same
guardrails (:func:`draft_offline`); the loop is plain Python, handed the (cached)
model call, so it reads no rows and writes nothing: :class:`RowOutcome` is what the
writer records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from galleryflow.captioning.client import ModelReply, Transport
from galleryflow.captioning.guardrails import (
    DRAFT_FIELDS,
    Draft,
    DraftContext,
    Evaluation,
    Issue,
    check_draft,
    evaluate,
    field_states,
)
from galleryflow.captioning.offline import OFFLINE_MODEL, caption_variants, image_stats, offline_draft
from galleryflow.captioning.plan import CaptionPlan
from galleryflow.captioning.prompts import Exchange, ModelCall
from galleryflow.core.settings import Settings
from galleryflow.core.stages import StageError
from galleryflow.db.models import Photo

AskModel = Callable[[ModelCall, Transport], ModelReply]
"""One model request (stage 7 passes its cached task ``ask_model``)."""


class RowOutcome(BaseModel):
    """What stage 7 concluded for one row (the proof is written from it)."""

    draft: Draft | None
    issues: list[dict[str, Any]]
    field_states: dict[str, str]
    passed: bool
    repair_attempts: int = 0
    fallback_used: bool = False
    fallback_reason: str | None = None
    model: str | None = None
    generation_mode: str = "model"
    requests: int = 0
    attempts: list[dict[str, Any]] = Field(default_factory=list)

    def report_line(self) -> tuple[str, str]:
        """The chunk report's outcome and message for the row."""
        if self.passed:
            note = f"drafted by {self.model}"
            if self.repair_attempts:
                note += f" after {self.repair_attempts} repair(s)"
            if self.fallback_used and self.generation_mode != "offline":
                note += " (fallback model)"
            return ("warning" if self.generation_mode == "offline" else "ok",
                    note + (" — OFFLINE captioner" if self.generation_mode == "offline" else ""))
        final = [i for i in self.issues if i.get("attempt") == self.requests] or self.issues
        reasons = "; ".join(sorted({i["message"] for i in final if i.get("severity") == "error"}))
        return "warning", f"blocked for review: {reasons or self.fallback_reason or 'no usable answer'}"


def fault_lines(evaluation: Evaluation) -> list[str]:
    """The repair prompt's lines: each model-fixable fault by field and code. Messages
    never quote the evidence, so nothing planted there leaves the evidence block."""
    return [f"{i.field} [{i.code}]: {i.message}" for i in evaluation.fixable]


def _issue_dicts(issues: list[Issue], attempt: int | str, model: str | None) -> list[dict[str, Any]]:
    return [{**i.model_dump(exclude_none=True), "attempt": attempt, "model": model} for i in issues]


def _attempt(number: int, model: str, mode: str, outcome: str, **extra: Any) -> dict[str, Any]:
    return {"attempt": number, "model": model, "mode": mode, "outcome": outcome, **extra}


def draft_with_model(call_base: dict[str, Any], ctx: DraftContext, plan: CaptionPlan,
                     transport: Transport, repairs: int, *, ask: AskModel) -> RowOutcome:
    """Ask, check, repair (bounded), fall back, or block: the loop for one row.

    Only faults the model can fix go back to it. A request that fails for one model (a
    persistent 5xx, a timeout, a model gone) moves this row to the fallback model; only
    when every configured model fails is it an error for the stage (raised).
    """
    if plan.info is None or plan.endpoint is None:
        raise ValueError("draft_with_model needs a model plan (mode 'model')")
    candidates = [(plan.endpoint.model, plan.info.digest, "model")]
    if plan.endpoint.fallback_model:
        candidates.append((plan.endpoint.fallback_model, plan.info.fallback_digest, "fallback-model"))
    history_issues: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    had_errors: set[str] = set()
    last: Evaluation | None = None
    last_parsed: Evaluation | None = None
    last_model = candidates[0]
    fallback_reason = None
    request_error: StageError | None = None
    requests = repair_count = 0
    for index, (model, digest, mode) in enumerate(candidates):
        history: list[Exchange] = []
        for attempt in range(repairs + 1):
            call = ModelCall(model=model, model_digest=digest, history=history, **call_base)
            try:
                reply = ask(call, transport)
            except StageError as exc:  # retries exhausted, model gone, request refused
                request_error = exc
                requests += 1
                attempts.append(_attempt(requests, model, mode, "request_error",
                                         error=str(exc)[:300]))
                fallback_reason = f"{model}: the request failed ({type(exc).__name__}: {exc})"[:500]
                break
            requests += 1
            repair_count += attempt > 0
            last_model = (model, digest, mode)
            last = evaluate(reply.content, ctx)
            if last.draft is not None:
                last_parsed = last
            attempts.append(_attempt(requests, model, mode, "passed" if last.passed else "faults",
                                     codes=sorted({i.code for i in last.errors}),
                                     fixed=sorted({i.code for i in last.issues
                                                   if i.severity == "fixed"})))
            if last.passed:
                repaired = set(DRAFT_FIELDS) if "answer" in had_errors else had_errors
                states = field_states(last.issues, ctx.locked, repaired=repaired)
                return RowOutcome(
                    draft=last.draft, issues=history_issues + _issue_dicts(last.issues, requests, model),
                    field_states=states, passed=True, repair_attempts=repair_count,
                    fallback_used=index > 0, fallback_reason=fallback_reason, model=model,
                    generation_mode=mode, requests=requests, attempts=attempts,
                )
            had_errors |= {i.field for i in last.errors}
            history_issues += _issue_dicts(last.errors, requests, model)
            lines = fault_lines(last)
            if not lines:
                break  # nothing a model can fix: asking again would only cost time
            history.append(Exchange(answer=reply.content[:4000], faults=lines))
        else:
            codes = sorted({i.code for i in last.errors}) if last else []
            fallback_reason = (f"{model} still failed after {repairs} repair prompt(s): "
                               f"{', '.join(codes)}")
    if last is None:  # no model answered at all: an outage of every configured model
        raise request_error or StageError("no model answered")
    final = last_parsed or last
    # Blocked: keep the last parsed draft so the reviewer can fix it; its proof says why.
    answered = [a["attempt"] for a in attempts if a["outcome"] != "request_error"]
    final_attempt = answered[-1]
    blocked_issues = [i for i in history_issues if i["attempt"] != final_attempt]
    blocked_issues += _issue_dicts(last.issues, final_attempt, last_model[0])
    return RowOutcome(
        draft=final.draft, issues=blocked_issues,
        field_states=field_states(last.issues, ctx.locked),
        passed=False, repair_attempts=repair_count, fallback_used=len(candidates) > 1,
        fallback_reason=fallback_reason if len(candidates) > 1 else None,
        model=last_model[0], generation_mode=last_model[2], requests=final_attempt,
        attempts=attempts,
    )


def draft_offline(row: Photo, ctx: DraftContext, plan: CaptionPlan, settings: Settings,
                  frame: int) -> RowOutcome:
    """The deterministic captioner, checked by the same guardrails."""
    stats = image_stats(Path(row.ollama_path or ""))
    first: tuple[Draft, list[Issue]] | None = None
    for variant in range(caption_variants()):  # a near-duplicate tries the next structure
        draft = offline_draft(ctx.evidence, stats, frame=frame, variant=variant,
                              max_name_chars=settings.ollama.limits.file_name_max_chars,
                              taken=ctx.taken_names)
        checked, issues = check_draft(draft, ctx)
        first = first or (checked, issues)
        if not any(i.blocking for i in issues):
            break
    else:
        if first is not None:
            checked, issues = first
    ok = not any(i.blocking for i in issues)
    return RowOutcome(
        draft=checked, issues=_issue_dicts(issues, 0, OFFLINE_MODEL),
        field_states=field_states(issues, ctx.locked), passed=ok,
        fallback_used=True, fallback_reason=plan.reason, model=OFFLINE_MODEL,
        generation_mode="offline",
    )
