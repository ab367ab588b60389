"""The mandatory review gate, shared by ``process-sets`` and ``review-publish``.

Pages of ``settings.review.page_size`` rows (best first); each page is one
pause-for-input. Decisions are written before anything else; rows sent back for
regeneration go through stage 7 again (with the duplicate checks against the
rows still pending) and come back in a later page. The loop ends when no row is
undecided, when the reviewer ends it, or on timeout — rows then stay
``awaiting_review`` for ``review-publish``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.context import FlowRunContext
from prefect.exceptions import Abort, ObjectNotFound, PrefectHTTPStatusError
from prefect.input import keyset_from_paused_state
from prefect.input.actions import read_flow_run_input
from prefect.client.schemas.objects import State
from prefect.states import Cancelled, Paused, Running
from prefect.utilities.engine import propose_state_sync
from pydantic import BaseModel, Field
from sqlalchemy import select

from galleryflow.db import Proof, Photo, session_scope
from galleryflow.core.prefect_run import flow_run_id, forget_gate, gate_wakeup
from galleryflow.notifications import notify_review_gate
from galleryflow.core.settings import Settings
from galleryflow.core.status import RowStatus
from galleryflow.publishing.hold import HoldingRow, held_message, holding_rows
from galleryflow.review.forms import (
    DecisionOutcome,
    ReviewDecision,
    build_description,
    row_to_input,
    sort_for_review,
)
from galleryflow.review.page import held_lines, keep_duplicates_together, page_markdown
from tasks.review_gate import apply_decisions

Regenerate = Callable[[list[int]], None]
GateOpened = Callable[[str | None, str, int], None]  # (flow run id, pause key, rows on the page)

# In-process listeners (the CLI's `demo --approve-all`) and notifications learn
# that a gate has opened (paused, its form stored); they answer or announce it
# through the API.
_gate_listeners: list[GateOpened] = []


def add_gate_listener(listener: GateOpened) -> None:
    _gate_listeners.append(listener)


def remove_gate_listener(listener: GateOpened) -> None:
    if listener in _gate_listeners:
        _gate_listeners.remove(listener)


# The server-side pause outlives the gate's own wait by this much, so that the
# server never fails the run under us (a pause that expires server-side can only
# end Failed); the gate takes its pause back itself when its time is up.
PAUSE_GRACE_SECONDS = 300


def pause_for_review(form: type[ReviewDecision], key: str, timeout: float,
                     poll_interval: float,
                     on_paused: Callable[[], None] | None = None) -> ReviewDecision | None:
    """Pause the current flow run for ``form``; the answer, or None when time ran out.

    Prefect's own protocol, as in ``prefect.flow_runs.pause_flow_run(wait_for_input=form)``:
    propose the Paused state first, *then* store the form under the pause's keyset —
    same state, same keyset, so the UI shows the same form and the resume API
    validates the same schema. The order matters: from Prefect 3.9 on, the server
    deletes every input stored under a pause's keyset when that pause fires (they
    belong to an earlier attempt), so a form stored before the pause is gone the
    moment the run pauses.

    What this order costs — a reader can see the run Paused a moment before its form
    is stored — is answered on the readers' side: ``galleryflow.review.answer`` waits for the
    form (the CLI, ``--approve-all``), and ``on_paused`` (listeners, notifications)
    runs only once the form is stored. While the run waits, every poll checks that
    the form is still there and stores it again, with a warning, if it is not: a
    paused run never waits for its timeout without a form a person can answer.

    Unlike Prefect's pause, a timeout does not leave the run Paused (it could then only
    end Failed, "paused and never resumed"): the gate moves the run back to Running
    itself and carries on, the rows stay ``awaiting_review`` and the run ends cleanly.
    An answer that arrived at the last moment still counts.
    """
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("the review gate can only pause inside a flow run")
    run_id: UUID = ctx.flow_run.id
    proposed = Paused(timeout_seconds=int(timeout) + PAUSE_GRACE_SECONDS, reschedule=False,
                      pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        try:
            state = propose_state_sync(client=client, state=proposed, flow_run_id=run_id)
        except Abort as exc:
            raise RuntimeError(f"the flow run cannot be paused for review: {exc}") from exc
        if state.is_running():
            # The server refused: this page's pause already fired (a retried run).
            return _answer(form, keyset, run_id)
        if not state.is_paused():
            raise RuntimeError(f"the flow run cannot be paused for review: it is {state.type.value}")
        # Listened for before anyone is told of the gate: an answer given at once (the
        # `--approve-all` listener answers within moments) wakes the wait instead of
        # being lost, which left the run idle for a whole poll interval.
        wakeup = gate_wakeup(str(run_id))
        try:
            _save_form(form, keyset)
            if on_paused is not None:
                on_paused()
            deadline = time.monotonic() + timeout
            return _wait(client, form, keyset, run_id, key, deadline, poll_interval, wakeup)
        finally:
            forget_gate(str(run_id))


def _wait(client: SyncPrefectClient, form: type[ReviewDecision], keyset: Any, run_id: UUID,
          key: str, deadline: float, poll_interval: float,
          wakeup: threading.Event) -> ReviewDecision | None:
    """Poll until the run is resumed; an answer given in this process wakes the poll."""
    while True:
        wakeup.wait(max(0.0, min(poll_interval, deadline - time.monotonic())))
        wakeup.clear()
        run = client.read_flow_run(run_id)
        if run.state and run.state.is_running():
            return _answer(form, keyset, run_id)
        if run.state and not run.state.is_paused():
            _stop_for(client, run_id, run.state, key)
        if time.monotonic() >= deadline:
            break
        _ensure_form(client, form, keyset, run_id, key)
    # Time is up: take the pause back (allowed while the server-side pause lasts).
    client.set_flow_run_state(run_id, Running(message=f"review gate {key} timed out"))
    return _answer(form, keyset, run_id)


class GateStopped(Abort):
    """The run was cancelled (or ended by someone else) while its review gate waited.

    An ``Abort``: Prefect's engine then leaves the run in the state it already has
    instead of proposing Failed, and nothing after the gate runs (no publish)."""

    def __init__(self, message: str, state: State) -> None:
        super().__init__(message)
        self.state = state


def _stop_for(client: SyncPrefectClient, run_id: UUID, state: State, key: str) -> NoReturn:
    """Stop the flow now: the run left its pause in some way other than a resume."""
    message = f"review gate {key}: the run was {state.type.value.lower()} while waiting for review"
    if state.is_cancelling():
        # `prefect flow-run cancel` / the UI's Cancel: a worker would kill the process
        # and finish the cancel; an in-process run has none, so it finishes it itself.
        state = client.set_flow_run_state(
            run_id, Cancelled(message=f"{state.message or 'cancelled'} ({message})"), force=True
        ).state or state
    get_run_logger().warning("%s; nothing more runs, the undecided rows stay awaiting_review",
                             message)
    raise GateStopped(message, state)


def _save_form(form: type[ReviewDecision], keyset: dict[str, str]) -> None:
    """Store the form's schema and description (kept if this pause was stored before)."""
    try:
        form.save(keyset)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 409:  # 409: already stored by an earlier attempt
            raise


def _ensure_form(client: SyncPrefectClient, form: type[ReviewDecision], keyset: dict[str, str],
                 run_id: UUID, key: str) -> None:
    """Store the form again if it has gone from the server while the run waits.

    Nothing in galleryflow deletes it, but a server can (a Prefect that clears a
    pause's inputs, a database restored from a backup, someone's script): without
    its form a paused run offers no way to answer it and would wait for the timeout.
    """
    try:
        client.read_flow_run_input(flow_run_id=run_id, key=keyset["schema"])
        return
    except ObjectNotFound:
        pass
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
    get_run_logger().warning(
        "review gate %s: the form of this pause was missing on the Prefect server; "
        "stored it again, so the run can be answered in the UI or with `galleryflow review`", key)
    _save_form(form, keyset)


def _answer(form: type[ReviewDecision], keyset: dict[str, str], run_id: UUID) -> ReviewDecision | None:
    """The reviewer's input for this pause, or None when nobody answered.

    (``RunInput.load`` would hand back the pre-filled defaults when there is no
    answer, which would read as a decision nobody made.)
    """
    value = read_flow_run_input(keyset["response"], flow_run_id=run_id)
    return form.model_validate(value) if value else None


class GateResult(BaseModel):
    approved: list[int] = Field(default_factory=list)
    rejected: list[int] = Field(default_factory=list)
    regenerated: list[int] = Field(default_factory=list)
    pending: list[int] = Field(default_factory=list)
    timed_out: bool = False
    ended_by_reviewer: bool = False
    pauses: int = 0


def _awaiting(row_ids: Sequence[int], settings: Settings) -> tuple[list[Photo], dict[int, Proof]]:
    """The rows still to review, best first, each near duplicate right after its twin."""
    with session_scope() as db:
        rows = list(db.scalars(select(Photo).where(
            Photo.id.in_(list(row_ids)), Photo.status == RowStatus.AWAITING_REVIEW)))
        proofs = {p.review_id: p for p in db.scalars(
            select(Proof).where(Proof.review_id.in_([r.id for r in rows])))}
    ordered = keep_duplicates_together(sort_for_review(rows), settings.review.near_duplicate_distance)
    return ordered, proofs


def _held(row_ids: Sequence[int]) -> dict[str, list[HoldingRow]]:
    """The zero-blocked rule: rows of these sets that hold their set back."""
    with session_scope() as db:
        keys = set(db.scalars(select(Photo.set_key).where(Photo.id.in_(list(row_ids)))))
        return holding_rows(db, keys)


def _links(page: int, artifact_id: UUID | None, settings: Settings) -> list[str]:
    """Where a reviewer sees this page's photos: its artifact in the Prefect UI (inline
    thumbnails) and the review page (`galleryflow review --web`)."""
    from prefect.settings import PREFECT_UI_URL

    links = []
    if artifact_id is not None:
        ui = (PREFECT_UI_URL.value() or "").rstrip("/")
        links.append(f"**Photos**: [artifact review-page-{page}]({ui}/artifacts/artifact/{artifact_id}) "
                     "(thumbnails, drafts, proof, scores)")
    run = flow_run_id()
    if run:
        links.append(f"**Review page**: [{settings.review.page_url}/gate/{run}]"
                     f"({settings.review.page_url}/gate/{run}) (start it with "
                     "`galleryflow review --web`: large photos, keyboard)")
    return links


def _record(outcome: DecisionOutcome, result: GateResult, page: int,
            held: dict[str, list[HoldingRow]]) -> None:
    result.approved += outcome.ids("approve")
    result.rejected += outcome.ids("reject")
    lines = [f"## Review page {page}: decisions", "",
             "| file | decision | applied | issues | flags | overrides |", "|---|---|---|---|---|---|"]
    for v in outcome.verdicts:
        lines.append(f"| {v.file} | {v.decision} | {'yes' if v.applied else 'no'} | "
                     f"{'; '.join(v.issues)} | {'; '.join(v.flags)} | {'; '.join(v.overrides)} |")
    lines += held_lines(held)
    create_markdown_artifact(key=f"review-decisions-{page}", markdown="\n".join(lines),
                             description="What the reviewer decided, as written to the DB")


def review_gate(
    row_ids: Sequence[int], settings: Settings, regenerate: Regenerate,
    on_open: GateOpened | None = None,
) -> GateResult:
    """Pause for review until every row of ``row_ids`` is decided (or time runs out)."""
    logger = get_run_logger()
    result = GateResult()
    page = 0
    while True:
        rows, proofs = _awaiting(row_ids, settings)
        rows = [r for r in rows if r.id not in result.pending]
        if not rows:
            break
        page_rows = rows[: settings.review.page_size]
        page += 1
        pages = page - 1 + -(-len(rows) // settings.review.page_size)
        # The page with its photos as an artifact (inline thumbnails): the resume dialog
        # has no room for them, its description links here and to the review page.
        artifact_id = create_markdown_artifact(
            key=f"review-page-{page}", description=f"Review gate page {page}: the rows to decide",
            markdown=page_markdown(page_rows, proofs, settings, page, pages,
                                   links=_links(page, None, settings), held=_held(row_ids)))
        description = build_description(
            page_rows, proofs, page, pages, run_hint="  \n".join(_links(page, artifact_id, settings)),
            photo_url=f"{settings.review.page_url}/photo/")
        form = ReviewDecision.for_page(
            description=description, rows=[row_to_input(r, proofs.get(r.id)) for r in page_rows],
        )
        key = f"review-{page}"
        listeners = [*_gate_listeners, *([on_open] if on_open else [])]
        page_sets = sorted({r.set_key for r in page_rows})

        def announce() -> None:
            # Only now, with the run paused and its form stored, is there a gate to
            # answer: whoever is told of it finds the form.
            notify_review_gate(len(page_rows), sets=page_sets, detail=f"page {page} of {pages}")
            for listener in listeners:
                try:
                    listener(flow_run_id(), key, len(page_rows))
                except Exception as exc:  # a listener never blocks the gate
                    logger.warning("review gate listener failed: %s", exc)
            logger.info("review gate open: page %d of %d (%d rows); answer on the review page "
                        "(%s/gate/%s, `galleryflow review --web`), in the Prefect UI or with "
                        "`galleryflow review`", page, pages, len(page_rows),
                        settings.review.page_url, flow_run_id())

        result.pauses += 1
        decision = pause_for_review(form, key, timeout=settings.review.timeout_seconds,
                                    poll_interval=settings.review.poll_interval_seconds,
                                    on_paused=announce)
        if decision is None:
            result.timed_out = True
            result.pending += [r.id for r in rows]
            logger.warning("review gate timed out: %d rows stay awaiting_review for review-publish",
                           len(rows))
            break
        page_ids = [r.id for r in page_rows]
        outcome = apply_decisions(decision, page_ids, settings)
        _record(outcome, result, page, _held(row_ids))
        to_regenerate = outcome.ids("regenerate")
        if to_regenerate:
            logger.info("regenerating %d rows", len(to_regenerate))
            try:
                regenerate(to_regenerate)
                result.regenerated += to_regenerate
            except Exception as exc:  # the rows keep their drafts; the reviewer decides
                logger.error("regeneration failed, rows keep their current drafts: %s", exc)
                result.pending += to_regenerate
        if decision.end_review:
            result.ended_by_reviewer = True
            result.pending = [r.id for r in _awaiting(row_ids, settings)[0]]
            break
        # Rows the reviewer saw and left undecided are not shown again in this run
        # (review-publish offers them later); a refused edit or approval comes back
        # on a later page with its reason.
        result.pending += [v.row_id for v in outcome.verdicts if v.decision == "undecided"]
    for key, rows in sorted(_held(row_ids).items()):
        logger.warning("%s; fix, regenerate or reject those rows (galleryflow review), then run "
                       "review-publish", held_message(key, rows))
    return result
