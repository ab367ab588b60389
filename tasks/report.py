"""The daily report's figures, read from galleryflow's DB for a time window.

Definitions (the window is ``[start, end)`` in UTC, like every DB timestamp):

- **sets processed / images processed**: sessions *started* in the window that
  ended ``completed`` or ``awaiting_review``, and the sum of their accepted images;
- **stage seconds**: the sum of ``image_set.stage_seconds`` per stage over those
  sessions, and the same per image;
- **images per hour**: images processed ÷ hours in which at least one of those
  sessions was running (overlapping sessions count once);
- **failures by category**: rows that ended ``failed`` (last updated in the
  window) by ``review_queue.error_category``, plus ``rolled_back_session`` for
  sessions rolled back in the window (each listed with its cause);
- **manual-intervention rate**: of the rows decided in the window
  (``decided_at``), the share a person edited (``edited_fields``) or rejected;
- **awaiting review**: rows waiting for a person *now*, and the oldest wait.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import func, select

from galleryflow.db import ImageSet, Photo, session_scope
from galleryflow.core.status import RowStatus, SetStatus

PROCESSED = (SetStatus.COMPLETED, SetStatus.AWAITING_REVIEW)
DECIDED = (RowStatus.APPROVED, RowStatus.REJECTED, RowStatus.PUBLISHED)


class RolledBack(BaseModel):
    image_set_id: int
    set: str
    error: str | None


class DailyReport(BaseModel):
    window_start: datetime
    window_end: datetime
    sets_processed: int = 0
    images_processed: int = 0
    files_excluded: int = 0
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    stage_seconds_per_image: dict[str, float] = Field(default_factory=dict)
    busy_hours: float = 0.0
    images_per_hour: float | None = None
    failures_by_category: dict[str, int] = Field(default_factory=dict)
    rolled_back: list[RolledBack] = Field(default_factory=list)
    rows_decided: int = 0
    rows_with_intervention: int = 0
    manual_intervention_rate: float | None = None
    rows_published: int = 0
    awaiting_review: int = 0
    oldest_awaiting_hours: float | None = None

    @property
    def idle(self) -> bool:
        return not (self.sets_processed or self.rolled_back or self.failures_by_category
                    or self.rows_decided or self.rows_published)


def busy_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Length of the union of time intervals (overlaps count once)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += (current_end - current_start).total_seconds()
    return total


def compute_report(start: datetime, end: datetime, now: datetime) -> DailyReport:
    """Every figure of the report for ``[start, end)``; ``now`` dates the backlog."""
    report = DailyReport(window_start=start, window_end=end)
    stages: Counter[str] = Counter()
    intervals: list[tuple[datetime, datetime]] = []
    failures: Counter[str] = Counter()
    with session_scope() as db:
        sessions = db.scalars(select(ImageSet).where(ImageSet.started_at >= start,
                                                     ImageSet.started_at < end))
        for s in sessions:
            if s.status in PROCESSED:
                report.sets_processed += 1
                report.images_processed += s.image_count or 0
                report.files_excluded += s.excluded_count or 0
                stages.update({k: float(v) for k, v in (s.stage_seconds or {}).items()})
                if s.finished_at and s.finished_at > s.started_at:
                    intervals.append((s.started_at, s.finished_at))
            elif s.status == SetStatus.ROLLED_BACK:
                report.rolled_back.append(RolledBack(image_set_id=s.id, set=s.name, error=s.error))
        failed_rows = db.execute(
            select(Photo.error_category, func.count(Photo.id))
            .where(Photo.status == RowStatus.FAILED, Photo.updated_at >= start,
                   Photo.updated_at < end)
            .group_by(Photo.error_category))
        for category, count in failed_rows:
            failures[category or "uncategorised"] += count
        decided = db.execute(
            select(Photo.status, Photo.edited_fields)
            .where(Photo.decided_at >= start, Photo.decided_at < end,
                   Photo.status.in_([str(s) for s in DECIDED])))
        for status, edited in decided:
            report.rows_decided += 1
            report.rows_with_intervention += bool(edited) or status == RowStatus.REJECTED
        report.rows_published = db.scalar(
            select(func.count(Photo.id)).where(Photo.published_at >= start,
                                                   Photo.published_at < end)) or 0
        report.awaiting_review = db.scalar(
            select(func.count(Photo.id)).where(Photo.status == RowStatus.AWAITING_REVIEW)) or 0
        oldest = db.scalar(select(func.min(Photo.updated_at))
                           .where(Photo.status == RowStatus.AWAITING_REVIEW))
    if report.rolled_back:
        failures["rolled_back_session"] += len(report.rolled_back)
    report.failures_by_category = dict(sorted(failures.items()))
    report.stage_seconds = {k: round(v, 3) for k, v in stages.items()}
    if report.images_processed:
        report.stage_seconds_per_image = {
            k: round(v / report.images_processed, 4) for k, v in stages.items()}
    report.busy_hours = round(busy_seconds(intervals) / 3600, 4)
    if report.busy_hours > 0:
        report.images_per_hour = round(report.images_processed / report.busy_hours, 1)
    if report.rows_decided:
        report.manual_intervention_rate = round(report.rows_with_intervention / report.rows_decided, 4)
    if oldest is not None:
        report.oldest_awaiting_hours = round((now - oldest).total_seconds() / 3600, 2)
    return report


def report_markdown(report: DailyReport) -> str:
    """The report as a Markdown artifact a person reads in the Prefect UI."""
    def fmt(value: float | None, suffix: str = "") -> str:
        return "–" if value is None else f"{value:,.2f}{suffix}" if isinstance(value, float) else f"{value:,}{suffix}"

    rate = (None if report.manual_intervention_rate is None
            else round(report.manual_intervention_rate * 100, 1))
    lines = [
        "# galleryflow daily report",
        f"{report.window_start:%Y-%m-%d %H:%M} → {report.window_end:%Y-%m-%d %H:%M} UTC",
        "",
        "| KPI | value |", "|---|---|",
        f"| sets processed | {report.sets_processed} |",
        f"| images processed | {report.images_processed} |",
        f"| files excluded by validation | {report.files_excluded} |",
        f"| images per hour (while busy) | {fmt(report.images_per_hour)} |",
        f"| busy hours | {fmt(report.busy_hours)} |",
        f"| rows decided by a person | {report.rows_decided} |",
        f"| manual-intervention rate (edited or rejected) | {fmt(rate, ' %')} |",
        f"| rows published | {report.rows_published} |",
        f"| rows awaiting review now | {report.awaiting_review} |",
        f"| oldest wait for review | {fmt(report.oldest_awaiting_hours, ' h')} |",
    ]
    if report.stage_seconds:
        lines += ["", "## Time per stage", "", "| stage | seconds | seconds per image |", "|---|---|---|"]
        lines += [f"| {k} | {v:,.1f} | {report.stage_seconds_per_image.get(k, 0):.3f} |"
                  for k, v in report.stage_seconds.items()]
    if report.failures_by_category:
        lines += ["", "## Failures by category", "", "| category | count |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report.failures_by_category.items()]
    if report.rolled_back:
        lines += ["", "## Rolled-back sessions", "", "| session | set | cause |", "|---|---|---|"]
        lines += [f"| {r.image_set_id} | {r.set} | {(r.error or '').replace('|', '/')[:200]} |"
                  for r in report.rolled_back]
    if report.idle:
        lines += ["", "_Nothing was processed, decided or published in this window._"]
    return "\n".join(lines)
