"""The review form in the real Prefect UI, driven by headless Chromium.

A full Prefect server (``prefect_server_api``: API and UI on one loopback port)
holds a ``process-sets`` run paused at the gate. Chromium opens the run's page,
opens the resume form, checks that the rows are there as cards (file, caption,
a decision dropdown), approves one row and submits. The run must resume and
that row must be decided in galleryflow's DB — the same path a person takes.

Debian's ``chromium`` is used (never a downloaded browser); screenshots land in
the test's ``tmp_path`` for a look when something changes in the UI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from flows.process_sets import RunSummary, process_sets
from galleryflow.core.status import RowStatus
from tests.fixtures.photos import make_set
from tests.fixtures.review import FlowThread, Reviewer, offline
from tests.fixtures.rows import db_rows
from tests.services import unavailable

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
    found = db_rows()
    assert summary.review.approved == [found[approved_file].id] and summary.review.pauses == 1
    assert found[approved_file].decided_at is not None
    assert found[approved_file].status == RowStatus.PUBLISHED  # approved, then published
    assert found[other_file].status == RowStatus.AWAITING_REVIEW  # left for review-publish
    assert sorted(p.name for p in shots.iterdir()) == ["1-form.png", "2-approved.png",
                                                       "3-completed.png"]
