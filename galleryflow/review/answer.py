"""Answering a paused review gate through the Prefect API (the CLI's side).

A paused run keeps its form in Prefect: the state's ``run_input_keyset`` points
at the JSON schema whose defaults are the pre-filled rows. The terminal reads
the rows from there — exactly what the UI shows — and resumes the run with the
same input the UI would send; Prefect validates it against the schema.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.flow_runs import resume_flow_run
from pydantic import BaseModel

from galleryflow.core.prefect_run import wake_gate
from galleryflow.review.forms import ReviewRowInput

GATED_FLOWS = ["process-sets", "review-publish"]


class OpenGate(BaseModel):
    flow_run_id: str
    flow_run_name: str
    key: str | None
    description: str
    rows: list[ReviewRowInput]


def paused_runs(client: SyncPrefectClient) -> list[FlowRun]:
    return client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=GATED_FLOWS)),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
        sort=FlowRunSort.START_TIME_DESC,
    )


def read_gate(client: SyncPrefectClient, run: FlowRun) -> OpenGate | None:
    """The rows and description of a paused run's form, or None if it has none."""
    details = run.state.state_details if run.state else None
    keyset = getattr(details, "run_input_keyset", None) if details else None
    if not keyset:
        return None
    schema = _run_input(client, run, keyset["schema"])
    if schema is None:
        return None  # paused a moment ago: the form is not stored yet
    description = _run_input(client, run, keyset["description"]) if keyset.get("description") else None
    defaults = schema.get("properties", {}).get("rows", {}).get("default", [])
    return OpenGate(
        flow_run_id=str(run.id), flow_run_name=run.name, key=getattr(details, "pause_key", None),
        description=description if isinstance(description, str) else "",
        rows=[ReviewRowInput.model_validate(r) for r in defaults],
    )


def _run_input(client: SyncPrefectClient, run: FlowRun, key: str) -> Any:
    """One stored run input, decoded; None when there is none (yet)."""
    try:
        return json.loads(client.read_flow_run_input(flow_run_id=run.id, key=key))
    except ObjectNotFound:
        return None
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise


class GateWithoutForm(BaseModel):
    """A gated run that is Paused but whose form could not be read."""

    flow_run_id: str
    flow_run_name: str
    key: str | None


# How long a reader waits for the form of a run it already sees Paused. The gate
# pauses first and stores the form right after (Prefect's order), and stores it
# again at each poll if it went missing, so a form shows up within moments.
FORM_WAIT_SECONDS = 20.0


def open_gates(run_id: str | None = None, form_wait: float = FORM_WAIT_SECONDS,
               poll: float = 0.5) -> tuple[list[OpenGate], list[GateWithoutForm]]:
    """The paused review gates (``run_id``: that run's), each with its form.

    A run seen Paused before its form is stored is waited for, up to ``form_wait``
    seconds; one still without a form then is returned in the second list, so the
    caller can say so instead of reporting that no gate is open.
    """
    deadline = time.monotonic() + form_wait
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(UUID(run_id))] if run_id else paused_runs(client)
            gates: list[OpenGate] = []
            missing: list[GateWithoutForm] = []
            for run in runs:
                if not (run.state and run.state.type == StateType.PAUSED):
                    continue
                gate = read_gate(client, run)
                if gate:
                    gates.append(gate)
                else:
                    details = run.state.state_details
                    missing.append(GateWithoutForm(flow_run_id=str(run.id), flow_run_name=run.name,
                                                   key=getattr(details, "pause_key", None)))
            if not missing or time.monotonic() >= deadline:
                return gates, missing
            time.sleep(poll)


def build_answer(gate: OpenGate, approve_all: bool = False, approve: set[str] = frozenset(),
                 reject: set[str] = frozenset(), reviewer: str = "", end_review: bool = False) -> dict[str, Any]:
    """The run input for a gate: by file name, or every row whose proof passed."""
    rows = []
    for row in gate.rows:
        names = {row.file, row.file.rsplit("/", 1)[-1], row.web_file_name}
        decision = row.decision
        if names & set(approve):
            decision = "approve"
        elif names & set(reject):
            decision = "reject"
        rows.append(row.model_copy(update={"decision": decision}).model_dump())
    return {"rows": rows, "bulk": "approve_passed" if approve_all else "none",
            "end_review": end_review, "reviewer": reviewer}


def answer_gate(gate: OpenGate, run_input: dict[str, Any]) -> None:
    resume_flow_run(UUID(gate.flow_run_id), run_input=run_input)
    wake_gate(gate.flow_run_id)  # a gate waiting in this process resumes now, not at its next poll


def wait_for_gate(flow_run_id: str, key: str | None = None, timeout: float = 120.0,
                  poll: float = 0.5) -> OpenGate | None:
    """Block until ``flow_run_id`` is paused with a form (``key``: that pause)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state and run.state.type == StateType.PAUSED:
                gate = read_gate(client, run)
                if gate and (key is None or gate.key == key):
                    return gate
            if run.state and run.state.is_final():
                return None
            time.sleep(poll)
    return None


def with_api_context(target: Callable[[], None]) -> Callable[[], None]:
    """``target`` bound to the caller's Prefect settings (only those: not its run context)."""
    from prefect.context import SettingsContext

    settings = SettingsContext.get()

    def run() -> None:
        if settings is None:
            target()
            return
        with SettingsContext(profile=settings.profile, settings=settings.settings):
            target()

    return run


def auto_approver(reviewer: str = "galleryflow --approve-all"):  # type: ignore[no-untyped-def]
    """A gate listener that answers each page by approving every row whose proof passed.

    It answers from a separate thread *through the Prefect API*, exactly as a
    person would from the terminal: the gate itself stays mandatory.
    """
    import threading

    def listener(flow_run_id: str | None, key: str, _rows: int) -> None:
        if flow_run_id is None:
            return

        def answer() -> None:
            gate = wait_for_gate(flow_run_id, key=key)
            if gate is not None:
                answer_gate(gate, build_answer(gate, approve_all=True, reviewer=reviewer))

        # The answering thread talks to the same API as the run (a settings context,
        # e.g. a test harness or `temporary_settings`, lives in contextvars).
        threading.Thread(target=with_api_context(answer), name=f"approve-{key}", daemon=True).start()

    return listener
