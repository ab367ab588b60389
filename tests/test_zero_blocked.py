"""The zero-blocked rule: a set publishes only when none of its rows is still blocked and
undecided; rejected rows do not hold it back; a setting relaxes it for a run, and the
publish summary says which rows hold a set back and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.fanout import publish_approved
from galleryflow.core.settings import Settings
from galleryflow.db import Proof, session_scope
from galleryflow.publishing.summary import summary_markdown
from galleryflow.review.forms import ReviewDecision, row_to_input
from tasks.review_gate import apply_decisions
from tests.fixtures.rows import RowSpec, by_id, drafted, insert_set, load_photos

BLOCKED_ISSUE = {"field": "caption", "code": "filler", "message": "starts with filler ('This image shows')",
                 "severity": "error"}


@pytest.fixture
def settings(db: str, gf_home: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = gf_home.model_copy(update={"publish": gf_home.publish.model_copy(
        update={"full_long_edge": 480, "thumb_long_edge": 120})})
    monkeypatch.setattr("tasks.publish.get_settings", lambda: settings)
    return settings


def _set_with_one_blocked_row(settings: Settings, tmp_path: Path) -> list[int]:
    """Two approved rows and one blocked row nobody has decided yet."""
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(480, 320), per_row=drafted(
        [RowSpec(), RowSpec(), RowSpec(status="awaiting_review", proof="blocked")])).row_ids
    with session_scope() as db:
        db.add(Proof(review_id=ids[2], passed=False, field_states={"caption": "blocked"},
                     issues=[BLOCKED_ISSUE]))
    return ids


def test_a_blocked_undecided_row_holds_its_set_back_until_it_is_rejected(
    settings: Settings, tmp_path: Path
) -> None:
    ids = _set_with_one_blocked_row(settings, tmp_path)

    held = publish_approved(ids[:2], settings=settings)
    assert held.published == [] and sorted(held.skipped) == ["lake-shore-01.jpg", "lake-shore-02.jpg"]
    for outcome in held.outcomes:
        assert "set lake-shore is held back" in outcome.message
        assert "lake-shore-03.jpg is blocked and undecided" in outcome.message
        assert "caption: starts with filler" in outcome.message
    assert len(held.held) == 1 and not held.rule_relaxed
    assert "Not published: set lake-shore is held back" in summary_markdown(held)
    assert [r.status for r in by_id(load_photos(settings=settings, ids=ids)).values()] == [
        "approved", "approved", "awaiting_review"]
    assert not any(settings.site_dir.glob("*.jpg"))

    # The reviewer rejects the blocked row (through the gate's own path): the set goes.
    row = by_id(load_photos(settings=settings, ids=[ids[2]]))[ids[2]]
    card = row_to_input(row).model_copy(update={"decision": "reject"})
    outcome = apply_decisions(ReviewDecision(rows=[card], reviewer="ana"), [ids[2]], settings)
    assert outcome.ids("reject") == [ids[2]]

    published = publish_approved(ids[:2], settings=settings)
    assert sorted(published.published) == ["lake-shore-01.jpg", "lake-shore-02.jpg"]
    assert published.held == []
    assert "held back" not in summary_markdown(published)
    assert [r.status for r in by_id(load_photos(settings=settings, ids=ids)).values()] == [
        "published", "published", "rejected"]


def test_the_rule_relaxed_for_a_run_publishes_and_says_so(settings: Settings, tmp_path: Path) -> None:
    ids = _set_with_one_blocked_row(settings, tmp_path)
    relaxed = settings.model_copy(update={"publish": settings.publish.model_copy(
        update={"allow_blocked_sets": True})})

    summary = publish_approved(ids[:2], settings=relaxed)
    assert sorted(summary.published) == ["lake-shore-01.jpg", "lake-shore-02.jpg"]
    assert summary.rule_relaxed and len(summary.held) == 1
    text = summary_markdown(summary)
    assert "Zero-blocked rule relaxed for this run (publish.allow_blocked_sets)" in text
    assert "lake-shore-03.jpg is blocked and undecided" in text


def test_rows_of_another_set_and_decided_rows_hold_nothing_back(
    settings: Settings, tmp_path: Path
) -> None:
    ids = insert_set(settings, tmp_path / "sets", "harbour", size=(480, 320), per_row=drafted(
        [RowSpec(), RowSpec(status="rejected", proof="blocked"),
         RowSpec(status="awaiting_review", proof="passed")])).row_ids
    _set_with_one_blocked_row(settings, tmp_path)  # another set, held back

    summary = publish_approved(ids[:1], settings=settings)
    assert summary.published == ["harbour-01.jpg"] and summary.held == []


def test_each_reason_is_named_once(settings: Settings, tmp_path: Path) -> None:
    from galleryflow.publishing.hold import blocking_reasons

    again = {**BLOCKED_ISSUE, "attempt": 2}
    warning = {"field": "keywords", "message": "not in evidence", "severity": "warning"}
    assert blocking_reasons([BLOCKED_ISSUE, again, warning]) == [
        "caption: starts with filler ('This image shows')"]
