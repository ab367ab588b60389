"""The review gate in a real browser: the Prefect UI's form and artifact, and the
review page (``galleryflow review --web``), driven by headless Chromium.

A full Prefect server (``prefect_server_api``: API and UI on one loopback port)
holds a ``process-sets`` run paused at the gate.

- The form: Chromium opens the run's page, opens the resume form, checks that the
  rows are there as cards (file, caption, a decision dropdown; identity fields
  disabled, no row to add), approves one row and submits. The run must resume and
  that row must be decided in galleryflow's DB — the same path a person takes.
- The artifact of the page shows every photo as a thumbnail (loaded images).
- The review page shows every photo; a caption is edited, one row rejected and the
  rest approved from the keyboard; the page is submitted and the run resumes with
  exactly those decisions.

Debian's ``chromium`` is used (never a downloaded browser); screenshots land in
the test's ``tmp_path`` (and in ``$GALLERYFLOW_SCREENSHOTS`` when set) for a look
when something changes in the UI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flows.process_sets import RunSummary, process_sets
from galleryflow.core.status import RowStatus
from tests.fixtures.photos import make_set
from tests.fixtures.review import FlowThread, Reviewer, offline
from tests.fixtures.rows import by_name, load_photos
from tests.services import free_port, unavailable

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser() -> Any:
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (Debian package `chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the `test` extra)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Exception as exc:  # a broken install: say why rather than erroring later
            unavailable(f"Chromium at {CHROMIUM} does not start under playwright: {exc}")
        try:
            yield launched
        finally:
            launched.close()


def _field(card: Any, label: str) -> Any:
    """One property of a form card, by its label ("Caption (Optional)" → "Caption")."""
    name = re.compile(rf"^{re.escape(label)}( \(Optional\))?$")
    return card.locator(".schema-form-property").filter(
        has=card.page.locator(".schema-form-property__label", has_text=name))


def _dropdown(card: Any, label: str) -> Any:
    """The select button of a ``Literal`` property (Prefect renders it as a dropdown)."""
    return _field(card, label).locator("button.p-select-button__control")


def test_the_review_form_renders_and_submits_in_the_prefect_ui(
    prefect_server_api: str, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    reviewer: Reviewer,  # noqa: F811
) -> None:
    from playwright.sync_api import expect
    from prefect.client.orchestration import get_client

    offline(monkeypatch)
    folder = make_set(tmp_path / "sets", "pier", 2, size=(480, 320))
    run = FlowThread(process_sets, [str(folder)])
    gate = reviewer.next_gate()  # paused, with its form stored
    shots = tmp_path / "screenshots"
    ui = prefect_server_api.removesuffix("/api")

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{ui}/runs/flow-run/{gate.flow_run_id}")
        expect(page.get_by_text("Paused", exact=True).first).to_be_visible()
        page.get_by_role("button", name="Resume").click()
        dialog = page.get_by_role("dialog")
        # The Markdown description is in the dialog (best row first). Prefect's dialog
        # shrinks it to zero height once the form outgrows the window, hence each
        # card's summary and the review-page artifact (see docs/review.md).
        expect(dialog.locator("article h2").first).to_have_text("Review 1 of 1: 2 photos")
        first_row = dialog.locator("article table tbody tr").first
        expect(first_row).to_contain_text(gate.rows[0].file.rsplit("/", 1)[-1])
        expect(first_row).to_contain_text(gate.rows[0].caption)
        # One card per row, pre-filled from the DB, with a decision dropdown.
        cards = dialog.locator(".schema-form-property-array-item")
        expect(cards).to_have_count(2)
        for card, row in zip([cards.nth(0), cards.nth(1)], gate.rows, strict=True):
            expect(_field(card, "File").locator("textarea")).to_have_value(row.file)
            expect(_field(card, "Summary").locator("textarea")).to_have_value(row.summary)
            expect(_field(card, "Caption").locator("textarea")).to_have_value(row.caption)
            expect(_field(card, "Keywords").locator("textarea")).to_have_value(row.keywords)
            expect(_dropdown(card, "Decision")).to_have_text("undecided")
        # Identity fields are fixed (a const: shown disabled), no row can be added, and
        # the bulk choices read as words.
        for label in ("Row Id", "File", "Summary"):
            expect(_field(cards.nth(0), label).locator("fieldset[disabled]")).to_have_count(1)
        expect(dialog.get_by_text("List can only have 2 items")).to_be_visible()
        bulk = _dropdown(dialog, "Bulk")
        bulk.focus()
        bulk.press("ArrowDown")
        assert page.get_by_role("option").all_inner_texts() == [
            "none", "approve rows whose proof passed",
            "approve rows whose proof passed, reject the rest", "reject every row"]
        page.keyboard.press("Escape")
        expect(page.get_by_role("option")).to_have_count(0)
        page.screenshot(path=str(shots / "1-form.png"))

        # Approve the first row. (Prefect's select opens from the keyboard; a synthetic
        # mouse click focuses it without opening its option list.)
        decision = _dropdown(cards.nth(0), "Decision")
        decision.focus()
        decision.press("ArrowDown")
        options = page.get_by_role("option")
        expect(options).to_have_count(4)
        assert options.all_inner_texts() == ["undecided", "approve", "reject", "regenerate"]
        options.filter(has_text=re.compile("^approve$")).click()
        expect(decision).to_have_text("approve")
        page.screenshot(path=str(shots / "2-approved.png"))

        dialog.get_by_role("button", name="Submit").click()
        expect(dialog).to_be_hidden()
        summary: RunSummary = run.result()
        page.reload()
        expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
        page.screenshot(path=str(shots / "3-completed.png"))
    finally:
        page.close()

    # The run resumed with the UI's answer (validated by the server) and applied it.
    approved_file = gate.rows[0].file.rsplit("/", 1)[-1]
    other_file = gate.rows[1].file.rsplit("/", 1)[-1]
    with get_client(sync_client=True) as client:
        sent = json.loads(client.read_flow_run_input(flow_run_id=gate.flow_run_id,
                                                     key="paused-review-1-response"))
    assert [r["decision"] for r in sent["rows"]] == ["approve", "undecided"]
    found = by_name(load_photos())
    assert summary.review.approved == [found[approved_file].id] and summary.review.pauses == 1
    assert found[approved_file].decided_at is not None
    assert found[approved_file].status == RowStatus.PUBLISHED  # approved, then published
    assert found[other_file].status == RowStatus.AWAITING_REVIEW  # left for review-publish
    assert sorted(p.name for p in shots.iterdir()) == ["1-form.png", "2-approved.png",
                                                       "3-completed.png"]
    _keep(shots)


def _keep(shots: Path) -> None:
    """Screenshots also where the caller asked for them (CI artifacts, docs/)."""
    target = os.environ.get("GALLERYFLOW_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy2(shot, Path(target) / shot.name)


def _loaded_images(locator: Any) -> list[int]:
    """naturalWidth of each image (0: not loaded, or broken)."""
    return locator.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")


def _wait_loaded(locator: Any, count: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        widths = _loaded_images(locator)
        if (len(widths) == count and all(widths)) or time.monotonic() > deadline:
            return widths
        time.sleep(0.25)


def test_the_review_page_artifact_shows_thumbnails_in_the_prefect_ui(
    prefect_server_api: str, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    reviewer: Reviewer,
) -> None:
    """The artifact ``review-page-1`` renders one thumbnail per row in the Prefect UI."""
    from playwright.sync_api import expect
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    from galleryflow.review.answer import answer_gate, build_answer, with_api_context

    offline(monkeypatch)
    folder = make_set(tmp_path / "sets", "quay", 3, size=(480, 320))
    run = FlowThread(process_sets, [str(folder)])
    gate = reviewer.next_gate()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["review-page-1"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[gate.flow_run_id])))
    assert len(artifacts) == 1
    # The pause's description links to it.
    assert f"/artifacts/artifact/{artifacts[0].id}" in gate.description
    ui = prefect_server_api.removesuffix("/api")
    shots = tmp_path / "screenshots"
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{ui}/artifacts/artifact/{artifacts[0].id}")
        thumbs = page.locator("img[src^='data:image/jpeg;base64,']")
        expect(thumbs).to_have_count(3)
        widths = _wait_loaded(thumbs, 3)
        assert len(widths) == 3 and all(0 < w <= 160 for w in widths), widths
        expect(page.get_by_text(gate.rows[0].caption).first).to_be_visible()
        page.screenshot(path=str(shots / "prefect-artifact.png"), full_page=True)
    finally:
        page.close()
    _keep(shots)
    # Answered from another thread: this one runs playwright's event loop, where Prefect's
    # sync API calls would hand back coroutines.
    answering = threading.Thread(target=with_api_context(
        lambda: answer_gate(gate, build_answer(gate, reject={r.file for r in gate.rows}))))
    answering.start()
    answering.join(60)
    run.result()


def test_the_review_page_is_worked_through_from_the_keyboard(
    prefect_server_api: str, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    reviewer: Reviewer,
) -> None:
    """galleryflow review --web: photos, a caption edited, one row rejected, the rest
    approved with the keyboard, submitted: the run resumes with exactly that."""
    from playwright.sync_api import expect

    from galleryflow.app.review_web import ReviewServer
    from galleryflow.core.settings import get_settings

    port = free_port()
    offline(monkeypatch, GALLERYFLOW_REVIEW__WEB_PORT=str(port))
    folder = make_set(tmp_path / "sets", "harbour", 3, size=(1200, 800))
    run = FlowThread(process_sets, [str(folder)])
    gate = reviewer.next_gate()
    assert f"http://127.0.0.1:{port}/gate/{gate.flow_run_id}" in gate.description
    server = ReviewServer(get_settings())
    server.start_in_thread()
    deadline = time.monotonic() + 30
    while not server.server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.server.started, "the review page did not start"

    files = [r.file.rsplit("/", 1)[-1] for r in gate.rows]
    new_caption = "Weathered wooden pier posts standing in calm grey harbour water."
    shots = tmp_path / "screenshots"
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(server.url(f"/gate/{gate.flow_run_id}"))
        cards = page.locator("section.row")
        expect(cards).to_have_count(3)
        photos = page.locator("section.row .photo img")
        widths = _wait_loaded(photos, 3)
        assert len(widths) == 3 and all(w > 0 for w in widths), widths
        expect(page.locator("#left")).to_have_text("3")
        page.screenshot(path=str(shots / "review-page.png"))

        # Row 1: edit its caption (e, type, Esc leaves the field; the edit is checked).
        page.keyboard.press("e")
        caption = cards.nth(0).locator("[name=caption]")
        expect(caption).to_be_focused()
        caption.fill(new_caption)
        page.keyboard.press("Escape")
        expect(caption).not_to_be_focused()
        expect(cards.nth(0).locator(".checks li.error")).to_have_count(0)
        # a: approve (and on to the next undecided row), r: reject, a: approve.
        page.keyboard.press("a")
        expect(cards.nth(1)).to_have_class(re.compile(r"\bcurrent\b"))
        page.keyboard.press("r")
        page.keyboard.press("a")
        expect(page.locator("#left")).to_have_text("0")
        assert cards.evaluate_all("cs => cs.map(c => c.dataset.decision)") == [
            "approve", "reject", "approve"]
        page.screenshot(path=str(shots / "review-page-decided.png"))
        page.keyboard.press("Control+Enter")
        expect(page.locator("#status")).to_contain_text("Sent 3 rows")
        page.screenshot(path=str(shots / "review-page-sent.png"))
    finally:
        page.close()
        server.stop()
    _keep(shots)

    summary: RunSummary = run.result()
    found = by_name(load_photos())
    assert summary.review.pauses == 1 and reviewer.nothing_more()
    assert sorted(summary.review.approved) == sorted([found[files[0]].id, found[files[2]].id])
    assert summary.review.rejected == [found[files[1]].id]
    assert found[files[0]].status == RowStatus.PUBLISHED
    assert found[files[0]].caption == new_caption
    assert "caption" in (found[files[0]].edited_fields or [])
    assert found[files[1]].status == RowStatus.REJECTED
    assert found[files[2]].status == RowStatus.PUBLISHED
    assert found[files[2]].caption == gate.rows[2].caption  # untouched
