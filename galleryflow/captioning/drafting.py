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

from pydantic import BaseModel

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
        reasons = "; ".join(sorted({i["message"] for i in self.issues
                                    if i.get("severity") == "error"
                                    and i.get("attempt") == self.requests}))
        return "warning", f"blocked for review: {reasons}"


def _fault_lines(evaluation: Evaluation) -> list[str]:
    return [f"{i.field}: {i.message}" for i in evaluation.errors]


def _issue_dicts(issues: list[Issue], attempt: int, model: str | None) -> list[dict[str, Any]]:
    return [{**i.model_dump(), "attempt": attempt, "model": model} for i in issues]


def draft_with_model(call_base: dict[str, Any], ctx: DraftContext, plan: CaptionPlan,
                     transport: Transport, repairs: int, *, ask: AskModel) -> RowOutcome:
    """Ask, check, repair (bounded), fall back, or block: the loop for one row."""
    assert plan.info is not None and plan.endpoint is not None
    candidates = [(plan.endpoint.model, plan.info.digest, "model")]
    if plan.endpoint.fallback_model:
        candidates.append((plan.endpoint.fallback_model, plan.info.fallback_digest, "fallback-model"))
    history_issues: list[dict[str, Any]] = []
    had_errors: set[str] = set()
    last: Evaluation | None = None
    last_parsed: Evaluation | None = None
    fallback_reason = None
    requests = repair_count = 0
    for index, (model, digest, mode) in enumerate(candidates):
        history: list[Exchange] = []
        for attempt in range(repairs + 1):
            call = ModelCall(model=model, model_digest=digest, history=history, **call_base)
            reply = ask(call, transport)
            requests += 1
            repair_count += attempt > 0
            last = evaluate(reply.content, ctx)
            if last.draft is not None:
                last_parsed = last
            if last.passed:
                repaired = set(DRAFT_FIELDS) if "answer" in had_errors else had_errors
                states = field_states(last.issues, ctx.locked, repaired=repaired)
                return RowOutcome(
                    draft=last.draft, issues=history_issues + _issue_dicts(last.issues, requests, model),
                    field_states=states, passed=True, repair_attempts=repair_count,
                    fallback_used=index > 0, fallback_reason=fallback_reason, model=model,
                    generation_mode=mode, requests=requests,
                )
            had_errors |= {i.field for i in last.errors}
            history_issues += _issue_dicts(last.errors, requests, model)
            history.append(Exchange(answer=reply.content[:4000], faults=_fault_lines(last)))
        codes = sorted({i.code for i in last.errors}) if last else []
        fallback_reason = (f"{model} still failed after {repairs} repair prompt(s): "
                           f"{', '.join(codes)}")
    assert last is not None
    final = last_parsed or last
    # Blocked: keep the last parsed draft so the reviewer can fix it; its proof says why.
    blocked_issues = [i for i in history_issues if i["attempt"] != requests]
    blocked_issues += _issue_dicts(last.issues, requests, candidates[-1][0])
    return RowOutcome(
        draft=final.draft, issues=blocked_issues,
        field_states=field_states(last.issues, ctx.locked),
        passed=False, repair_attempts=repair_count, fallback_used=len(candidates) > 1,
        fallback_reason=fallback_reason if len(candidates) > 1 else None,
        model=candidates[-1][0], generation_mode=candidates[-1][2], requests=requests,
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
        checked, issues = first  # type: ignore[misc]
    ok = not any(i.blocking for i in issues)
    return RowOutcome(
        draft=checked, issues=_issue_dicts(issues, 0, OFFLINE_MODEL),
        field_states=field_states(issues, ctx.locked), passed=ok,
        fallback_used=True, fallback_reason=plan.reason, model=OFFLINE_MODEL,
        generation_mode="offline",
    )
