"""The daily report's figures match the DB, in the artifact and in the JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from galleryflow.db import ImageSet, Photo, session_scope
from galleryflow.db.models import utcnow
from galleryflow.core.settings import Settings
from tasks.report import busy_seconds

H = timedelta(hours=1)


def _session(db, name: str, status: str, started: datetime, finished: datetime | None = None,
             images: int = 0, excluded: int = 0, stages: dict | None = None,
             error: str | None = None) -> ImageSet:
    s = ImageSet(set_key=name, name=name, source_dir=f"/photos/{name}", status=status,
                 started_at=started, finished_at=finished, image_count=images,
                 excluded_count=excluded, stage_seconds=stages, error=error)
    db.add(s)
    db.flush()
    return s


def _rows(db, session: ImageSet, prefix: str, n: int, status: str, updated: datetime, **extra) -> None:
    for i in range(n):
        db.add(Photo(set_key=session.set_key, original_name=f"{prefix}-{i}.jpg",
                         image_set_id=session.id, created_session_id=session.id,
                         sha256=f"{prefix}{i}".ljust(64, "0"), source_path=f"/p/{prefix}-{i}.jpg",
                         status=status, updated_at=updated, **extra))


@pytest.fixture
def seeded(db: str) -> datetime:
    end = utcnow().replace(microsecond=0)
    with session_scope() as db_:
        s1 = _session(db_, "alps", "completed", end - 10 * H, end - 9 * H, images=10, excluded=1,
                      stages={"validate": 2.0, "intake": 30.0, "exif": 5.0})
        s2 = _session(db_, "harbour", "awaiting_review", end - 9.5 * H, end - 8.5 * H, images=20,
                      stages={"intake": 60.0, "exif": 10.0, "scoring": 100.0})
        _session(db_, "doomed", "rolled_back", end - 5 * H, end - 5 * H,
                 error="StageError: model server unreachable")
        _session(db_, "last-week", "completed", end - 30 * H, end - 29 * H, images=99,
                 stages={"intake": 999.0})  # outside the window
        _session(db_, "running", "running", end - 1 * H, images=7)  # not finished: not counted
        in_window = end - 3 * H
        _rows(db_, s1, "fail-cap", 2, "failed", in_window, error_category="caption_guardrail")
        _rows(db_, s1, "fail-any", 1, "failed", in_window)
        _rows(db_, s1, "fail-old", 1, "failed", end - 40 * H, error_category="old")
        _rows(db_, s1, "ok", 2, "approved", in_window, decided_at=in_window)
        _rows(db_, s1, "edited", 1, "approved", in_window, decided_at=in_window,
              edited_fields=["caption"])
        _rows(db_, s2, "rejected", 1, "rejected", in_window, decided_at=in_window)
        _rows(db_, s2, "pub", 1, "published", in_window, decided_at=in_window, edited_fields=[],
              published_at=in_window)
        _rows(db_, s2, "rej-old", 1, "rejected", end - 30 * H, decided_at=end - 30 * H)
        _rows(db_, s2, "wait-old", 1, "awaiting_review", end - 50 * H)
        _rows(db_, s2, "wait", 2, "awaiting_review", end - 2 * H)
    return end


def test_busy_time_counts_overlaps_once():
    t = datetime(2026, 7, 1)
    assert busy_seconds([(t, t + H), (t + 0.5 * H, t + 1.5 * H), (t + 3 * H, t + 4 * H)]) == 2.5 * 3600
    assert busy_seconds([]) == 0


def test_daily_report_matches_the_db(seeded: datetime, gf_home: Settings, prefect_api):
    from flows.daily_report import daily_report

    report = daily_report(end=seeded)
    assert (report.sets_processed, report.images_processed, report.files_excluded) == (2, 30, 1)
    assert report.stage_seconds == {"validate": 2.0, "intake": 90.0, "exif": 15.0, "scoring": 100.0}
    assert report.stage_seconds_per_image == {"validate": round(2 / 30, 4), "intake": 3.0,
                                              "exif": 0.5, "scoring": round(100 / 30, 4)}
    assert report.busy_hours == 1.5 and report.images_per_hour == 20.0
    assert report.failures_by_category == {"caption_guardrail": 2, "rolled_back_session": 1,
                                           "uncategorised": 1}
    assert [(r.set, r.error) for r in report.rolled_back] == [
        ("doomed", "StageError: model server unreachable")]
    assert (report.rows_decided, report.rows_with_intervention) == (5, 2)
    assert report.manual_intervention_rate == 0.4
    assert report.rows_published == 1
    assert report.awaiting_review == 3
    assert report.oldest_awaiting_hours == pytest.approx(50, abs=0.1)

    # The same figures as JSON, and as an artifact in the UI.
    saved = json.loads((gf_home.home / "reports" / "latest.json").read_text())
    assert saved == json.loads(report.model_dump_json())
    assert (gf_home.home / "reports" / f"daily-report-{seeded:%Y%m%d-%H%M}.json").is_file()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["daily-report"])))
    markdown = max(artifacts, key=lambda a: a.created).data
    assert "| images processed | 30 |" in markdown
    assert "| manual-intervention rate (edited or rejected) | 40.00 % |" in markdown
    assert "| caption_guardrail | 2 |" in markdown and "| rows awaiting review now | 3 |" in markdown


def test_a_day_with_nothing_is_a_quick_completed_report(db: str, prefect_api):
    from flows.daily_report import daily_report

    state = daily_report(return_state=True)
    assert state.is_completed()
    report = state.result()
    assert report.idle and report.images_per_hour is None and report.manual_intervention_rate is None
