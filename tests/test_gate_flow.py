"""The review gate in real flow runs (Prefect's test harness), answered through the API.

Each flow runs in a thread of its own (with the harness's context copied in, so
it talks to the same API); the test plays the reviewer from the main thread the
way the CLI does: it waits for the paused run's form, reads the pre-filled rows
from Prefect, and resumes the run with an answer Prefect validates against the
form's schema (``galleryflow.review.answer``).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from typer.testing import CliRunner

from flows.gate import GateStopped
from flows.process_sets import RunSummary, process_sets
from flows.review_publish import ReviewPublishSummary, review_publish
from galleryflow.review.answer import OpenGate, answer_gate, build_answer
from galleryflow.core.settings import get_settings, reset_settings
from galleryflow.core.status import RowStatus
from tests.fixtures.ollama import point_at
from tests.fixtures.photos import make_set
from tests.fixtures.review import FlowThread, Reviewer, configure, offline
from tests.fixtures.rows import by_name, load_photos
from tests.services.ollama_stub import Good, OllamaStub

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]


def decide(gate: OpenGate, **by_file: str | dict[str, Any]) -> dict[str, Any]:
    """An answer for the gate: a decision (or a dict of field changes) per file name."""
    answer = build_answer(gate, reviewer="test reviewer")
    for row in answer["rows"]:
        change = by_file.get(row["file"].rsplit("/", 1)[-1])
        if isinstance(change, str):
            row["decision"] = change
        elif change:
            row.update(change)
    return answer


def artifact(flow_run_id: str, key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert found, f"no {key} artifact on run {flow_run_id}"
    return found[0].data


# ------------------------------------------------------------------ intake to published


def test_a_set_from_intake_to_sftp_and_mariadb_with_edit_and_reject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Reviewer, stub: OllamaStub,  # noqa: F811
    sftp_server: Any, mariadb_url: str,
) -> None:
    """Stages 1–9 with decisions sent through the Prefect API, published for real."""
    from blocks.gallery_db import GalleryDatabase
    from blocks.targets import SftpTarget
    from tests.fixtures.services import sftp_target_fields

    base = sftp_server.fresh_dir()
    SftpTarget(**sftp_target_fields(sftp_server, base)).save("gate-site", overwrite=True)
    GalleryDatabase(url=mariadb_url, table="gallery").save("gate-gallery", overwrite=True)
    point_at(configure(monkeypatch, GALLERYFLOW_PUBLISH__TARGET="sftp",
                       GALLERYFLOW_PUBLISH__TARGET_BLOCK="gate-site",
                       GALLERYFLOW_PUBLISH__GALLERY_BLOCK="gate-gallery"), stub)
    folder = make_set(tmp_path / "sets", "quiet-bay", 3, size=(640, 480))

    run = FlowThread(process_sets, [str(folder)], location="Lake Thun")
    gate = reviewer.next_gate()
    assert sorted(r.file for r in gate.rows) == [f"quiet-bay/quiet-bay-0{i}.jpg" for i in (1, 2, 3)]
    assert all(r.caption and r.keywords and r.web_file_name for r in gate.rows)  # drafts pre-filled
    assert all(r.summary.startswith("proof passed · aesthetic") for r in gate.rows)
    assert "## Review 1 of 1: 3 photos" in gate.description
    caption = "Soft morning light over the quiet bay, low hills resting behind the water."
    answer_gate(gate, decide(
        gate,
        **{"quiet-bay-01.jpg": {"decision": "approve", "caption": caption,
                                "web_file_name": "quiet-bay-soft-light.jpg"},
           "quiet-bay-02.jpg": "reject",
           "quiet-bay-03.jpg": "approve"},
    ))
    summary: RunSummary = run.result()

    assert summary.review.approved == sorted(summary.review.approved) and len(summary.review.approved) == 2
    assert summary.review.pauses == 1 and not summary.review.timed_out
    assert summary.publish is not None and len(summary.publish.published) == 2
    found = by_name(load_photos())
    edited, rejected, plain = (found[f"quiet-bay-0{i}.jpg"] for i in (1, 2, 3))
    assert (edited.status, rejected.status, plain.status) == ("published", "rejected", "published")
    assert edited.caption == caption and edited.web_file_name == "quiet-bay-soft-light.jpg"
    assert sorted(edited.edited_fields) == ["caption", "file_name"]
    assert edited.reviewer == "test reviewer" and edited.decided_at is not None

    # On the SFTP server and in the MariaDB gallery table: the two approved photos only.
    with sftp_server.client() as sftp:
        remote = sorted(sftp.listdir(base))
    assert remote == sorted(["quiet-bay-soft-light.jpg", plain.web_file_name, "thumbs"])
    gallery = GalleryDatabase(url=mariadb_url, table="gallery")
    with gallery.connect() as g:
        published = {r["File_Name"]: r for r in g.rows()}
    assert sorted(published) == sorted(["quiet-bay-soft-light.jpg", plain.web_file_name])
    assert edited.remote_id == str(published["quiet-bay-soft-light.jpg"]["id"])
    assert caption in published["quiet-bay-soft-light.jpg"].values()
    assert rejected.web_file_name not in published

    page_table = artifact(summary.flow_run_id, "review-page-1")
    assert page_table.startswith("## Review 1 of 1: 3 photos") and "quiet-bay-02.jpg" in page_table
    record = artifact(summary.flow_run_id, "review-decisions-1")
    assert "| quiet-bay/quiet-bay-02.jpg | reject | yes |" in record


# ------------------------------------------------------------------------- regenerate


def test_regenerate_returns_the_row_on_a_later_page_with_a_new_caption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Reviewer, stub: OllamaStub,  # noqa: F811
) -> None:
    point_at(configure(monkeypatch), stub)
    folder = make_set(tmp_path / "sets", "ridge", 2, size=(640, 480))
    run = FlowThread(process_sets, [str(folder)])

    first = reviewer.next_gate()
    old = {r.file: r.caption for r in first.rows}
    # The stand-in writes a fresh draft when asked again with the previous caption as evidence.
    stub.default = lambda call: Good(
        caption="Ridge lines fold into the haze, drawn again for the reviewer this "
        + call.evidence["time_of_day"] + ".") if call.evidence.get("previous_caption") else Good()
    answer_gate(first, decide(first, **{"ridge-01.jpg": "regenerate", "ridge-02.jpg": "approve"}))

    second = reviewer.next_gate()
    assert [r.file for r in second.rows] == ["ridge/ridge-01.jpg"]  # only the regenerated row
    assert second.rows[0].caption != old["ridge/ridge-01.jpg"]
    assert "drawn again" in second.rows[0].caption
    regenerate_call = [c for c in stub.chat_calls() if c.evidence.get("previous_caption")]
    assert regenerate_call and regenerate_call[-1].evidence["previous_caption"] == old["ridge/ridge-01.jpg"]
    answer_gate(second, decide(second, **{"ridge-01.jpg": "approve"}))

    summary: RunSummary = run.result()
    assert reviewer.keys == ["review-1", "review-2"] and summary.review.pauses == 2
    assert summary.review.regenerated == [by_name(load_photos())["ridge-01.jpg"].id]
    found = by_name(load_photos())
    assert {r.status for r in found.values()} == {"published"}
    assert "drawn again" in found["ridge-01.jpg"].caption


# ----------------------------------------------------------------------------- paging


def test_pages_of_two_rows_pause_until_every_row_is_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Reviewer,
) -> None:
    offline(monkeypatch, GALLERYFLOW_REVIEW__PAGE_SIZE="2")
    folder = make_set(tmp_path / "sets", "meadow", 5, size=(480, 320))
    run = FlowThread(process_sets, [str(folder)])

    seen: list[str] = []
    for page, expected in enumerate((2, 2, 1), 1):
        gate = reviewer.next_gate()
        assert len(gate.rows) == expected
        assert f"## Review {page} of 3: {expected} photos" in gate.description
        seen += [r.file for r in gate.rows]
        answer_gate(gate, build_answer(gate, approve_all=True, reviewer="bulk"))
    summary: RunSummary = run.result()

    assert reviewer.keys == ["review-1", "review-2", "review-3"] and reviewer.nothing_more()
    assert sorted(seen) == [f"meadow/meadow-0{i}.jpg" for i in range(1, 6)]  # each row once
    # Best first across the pages: the aesthetic score never rises from one row to the next.
    found = by_name(load_photos())
    scores = [found[f.rsplit("/", 1)[-1]].clip_aesthetic_score for f in seen]
    assert scores == sorted(scores, reverse=True)
    assert summary.review.pauses == 3 and len(summary.publish.published) == 5
    assert {r.status for r in found.values()} == {"published"}
    assert {r.reviewer for r in found.values()} == {"bulk"}
    site = get_settings().site_dir
    assert len(list(site.glob("*.jpg"))) == 5  # the embedded default: the local site folder


def test_ending_the_review_leaves_the_rest_for_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Reviewer,
) -> None:
    offline(monkeypatch, GALLERYFLOW_REVIEW__PAGE_SIZE="2")
    folder = make_set(tmp_path / "sets", "dunes", 3, size=(480, 320))
    run = FlowThread(process_sets, [str(folder)])
    gate = reviewer.next_gate()
    first = gate.rows[0].file.rsplit("/", 1)[-1]
    answer = decide(gate, **{first: "approve"})
    answer["end_review"] = True
    answer_gate(gate, answer)
    summary: RunSummary = run.result()
    assert summary.review.ended_by_reviewer and summary.review.pauses == 1
    assert len(summary.review.pending) == 2
    found = by_name(load_photos())
    assert found[first].status == "published"
    assert sorted(r.status for r in found.values()) == ["awaiting_review", "awaiting_review", "published"]


def test_cancelling_a_paused_run_stops_it_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Reviewer,
) -> None:
    """`prefect flow-run cancel` (or Cancel in the UI) while the gate waits: the run
    ends Cancelled at once, not as a timeout, and goes on to publish nothing, not even
    the rows approved on an earlier page; they wait for review-publish."""
    from prefect.states import Cancelling

    offline(monkeypatch, GALLERYFLOW_REVIEW__PAGE_SIZE="2")
    folder = make_set(tmp_path / "sets", "fjord", 3, size=(480, 320))
    run = FlowThread(process_sets, [str(folder)])
    gate = reviewer.next_gate()
    answer_gate(gate, decide(gate, **{r.file.rsplit("/", 1)[-1]: "approve" for r in gate.rows}))
    second = reviewer.next_gate()
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(second.flow_run_id, Cancelling(message="cancelled by a person"))
    with pytest.raises(GateStopped, match="review gate review-2: the run was cancelling"):
        run.finish()  # in-process, the flow call raises (a worker's run just ends)

    found = by_name(load_photos())
    assert sorted(r.status for r in found.values()) == ["approved", "approved", "awaiting_review"]
    assert not any(r.status == RowStatus.PUBLISHED for r in found.values())
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(second.flow_run_id).state
    assert final is not None and final.is_cancelled()
    assert final.message.startswith("cancelled by a person (review gate review-2")


# ------------------------------------------------------- Prefect's pause protocol


def test_the_form_is_stored_after_the_pause_and_found_again_when_the_server_loses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefect's order: pause, then store the form. A Prefect >= 3.9 server deletes every
    input under a pause's keyset when the pause fires, so a form stored first would be
    gone. Here each form is also deleted right after the gate stored it (the way such a
    server treats inputs it sees as stale): the gate must store it again while it waits,
    and the readers that see the Paused run first must wait for it — the terminal
    (`galleryflow review --approve-all`) on page 1, the `--approve-all` listener of
    `run`/`demo` on page 2. Nothing may wait silently for the review timeout."""
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    from flows.gate import add_gate_listener, remove_gate_listener
    from galleryflow.app.cli import app
    from galleryflow.review.answer import auto_approver

    offline(monkeypatch, GALLERYFLOW_REVIEW__PAGE_SIZE="1",
            GALLERYFLOW_REVIEW__TIMEOUT_SECONDS="200")
    folder = make_set(tmp_path / "sets", "tidal-flat", 2, size=(480, 320))
    approver = auto_approver(reviewer="approve-all")
    pages: queue.Queue[str] = queue.Queue()
    stored_when_announced: list[bool] = []

    def lose_the_form(flow_run_id: str | None, key: str, rows: int) -> None:
        assert flow_run_id is not None
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            assert run.state is not None and run.state.is_paused()
            keyset = run.state.state_details.run_input_keyset
            assert keyset is not None
            # Announced only once the form is stored: a notification's reader finds it.
            client.read_flow_run_input(flow_run_id=run.id, key=keyset["schema"])
            stored_when_announced.append(True)
            for name in ("schema", "description"):
                client.delete_flow_run_input(flow_run_id=run.id, key=keyset[name])
            try:
                client.read_flow_run_input(flow_run_id=run.id, key=keyset["schema"])
                gone = False
            except (ObjectNotFound, PrefectHTTPStatusError):
                gone = True
            assert gone, "the form was not deleted"
        if key == "review-2":
            approver(flow_run_id, key, rows)
        pages.put(key)

    def lose_the_form_or_say_why(flow_run_id: str | None, key: str, rows: int) -> None:
        try:
            lose_the_form(flow_run_id, key, rows)
        except BaseException as exc:  # the gate swallows a listener's error: hand it over
            pages.put(f"listener failed: {exc!r}")

    add_gate_listener(lose_the_form_or_say_why)
    try:
        run = FlowThread(process_sets, [str(folder)])
        assert pages.get(timeout=240) == "review-1"
        result = CliRunner().invoke(app, ["review", "--approve-all", "--reviewer", "terminal"])
        assert result.exit_code == 0, (result.output, result.exception)
        assert "review-1: 1 approved, none left undecided" in result.output
        assert "form is not stored" not in result.output
        assert pages.get(timeout=240) == "review-2"
        summary: RunSummary = run.result()
    finally:
        remove_gate_listener(lose_the_form_or_say_why)

    assert stored_when_announced == [True, True]
    assert summary.review.pauses == 2 and not summary.review.timed_out
    assert len(summary.publish.published) == 2
    found = by_name(load_photos())
    assert {r.status for r in found.values()} == {RowStatus.PUBLISHED}
    assert sorted(r.reviewer for r in found.values()) == ["approve-all", "terminal"]


# ------------------------------------------------- timeout, review-publish, and the CLI


def test_timeout_leaves_rows_waiting_then_review_publish_and_the_cli_finish_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Reviewer,
) -> None:
    from galleryflow.app.cli import app

    offline(monkeypatch, GALLERYFLOW_REVIEW__TIMEOUT_SECONDS="3")
    folder = make_set(tmp_path / "sets", "harbour", 3, size=(480, 320))

    # Nobody answers: the gate times out and the run still ends Completed.
    state = FlowThread(process_sets, [str(folder)]).finish()
    assert state.is_completed(), state
    summary: RunSummary = state.result()
    assert summary.review.timed_out and summary.publish is None
    assert sorted(summary.review.pending) == sorted(summary.sets[0].row_ids)
    assert {r.status for r in by_name(load_photos()).values()} == {RowStatus.AWAITING_REVIEW}
    assert reviewer.keys == [] and not reviewer.opened.empty()
    reviewer.opened.get_nowait()  # the page that timed out

    # review-publish takes them up; the reviewer answers from the terminal.
    monkeypatch.setenv("GALLERYFLOW_REVIEW__TIMEOUT_SECONDS", "600")
    reset_settings()
    later = FlowThread(review_publish, ["harbour"])
    gate = reviewer.next_gate()
    assert len(gate.rows) == 3
    result = CliRunner().invoke(app, ["review", gate.flow_run_id, "--approve", "harbour-01.jpg",
                                      "--approve", "harbour-03.jpg", "--reject", "harbour-02.jpg",
                                      "--reviewer", "cli"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "2 approved, 1 rejected, none left undecided" in result.output
    assert "harbour/harbour-02.jpg" in result.output
    outcome: ReviewPublishSummary = later.result()

    assert outcome.rows == 3 and outcome.review.approved and not outcome.review.timed_out
    found = by_name(load_photos())
    assert {n: r.status for n, r in found.items()} == {
        "harbour-01.jpg": "published", "harbour-02.jpg": "rejected", "harbour-03.jpg": "published"}
    assert {r.reviewer for r in found.values()} == {"cli"}
    assert sorted(outcome.publish.published) == ["harbour-01.jpg", "harbour-03.jpg"]

    # Nothing left: the CLI says so, and review-publish is a quick no-op.
    empty = CliRunner().invoke(app, ["review"])
    assert empty.exit_code == 0 and "No review gate is open" in empty.output
    again: ReviewPublishSummary = FlowThread(review_publish, ["harbour"]).result()
    assert again.rows == 0


# ----------------------------------------------------------------- --approve-all


def test_approve_all_answers_through_the_api_and_leaves_blocked_rows_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: OllamaStub,  # noqa: F811
) -> None:
    """`galleryflow demo --approve-all`'s listener: a real answer, sent from its own thread."""
    from flows.gate import add_gate_listener, remove_gate_listener
    from galleryflow.review.answer import auto_approver
    from tests.services.ollama_stub import Good as Answer

    point_at(configure(monkeypatch), stub)
    folder = make_set(tmp_path / "sets", "cove", 3, size=(480, 320))
    filler = Answer(caption="In this image we can see a cove with water and some hills behind it.")
    stub.script("llava:7b", filler, filler, filler)  # the first row: repairs fail, proof blocked
    listener = auto_approver(reviewer="approve-all")
    add_gate_listener(listener)
    try:
        summary: RunSummary = FlowThread(process_sets, [str(folder)]).result()
    finally:
        remove_gate_listener(listener)
    found = by_name(load_photos())
    assert found["cove-01.jpg"].proof_status == "blocked"
    # The blocked row is left waiting, and holds its set back (the zero-blocked rule):
    # the approved rows wait until a person fixes, regenerates or rejects it.
    assert {n: r.status for n, r in found.items()} == {
        "cove-01.jpg": "awaiting_review", "cove-02.jpg": "approved", "cove-03.jpg": "approved"}
    assert {found[n].reviewer for n in ("cove-02.jpg", "cove-03.jpg")} == {"approve-all"}
    assert summary.review.pending == [found["cove-01.jpg"].id] and summary.review.pauses == 1
    assert summary.publish.published == [] and len(summary.publish.held) == 1
    assert "cove-01.jpg is blocked and undecided" in summary.publish.held[0]


def test_an_answer_given_as_the_gate_opens_wakes_it(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that answers before the gate starts waiting (here: within its own
    announcement, through the API) wakes the gate: the run goes on without waiting for
    a poll. The poll interval is an hour, so a lost wake-up would leave the run paused
    past the test's patience."""
    from flows.gate import add_gate_listener, remove_gate_listener
    from galleryflow.review.answer import wait_for_gate

    offline(monkeypatch, GALLERYFLOW_REVIEW__POLL_INTERVAL_SECONDS="3600",
            GALLERYFLOW_REVIEW__TIMEOUT_SECONDS="7200")
    folder = make_set(tmp_path / "sets", "quick-answer", 2, size=(480, 320))

    def answer_now(flow_run_id: str | None, key: str, rows: int) -> None:
        assert flow_run_id is not None
        gate = wait_for_gate(flow_run_id, key=key, timeout=60)
        assert gate is not None
        answer_gate(gate, build_answer(gate, approve_all=True, reviewer="at once"))

    add_gate_listener(answer_now)
    try:
        summary: RunSummary = FlowThread(process_sets, [str(folder)]).result()
    finally:
        remove_gate_listener(answer_now)
    assert summary.review.pauses == 1 and not summary.review.timed_out
    assert len(summary.publish.published) == 2
