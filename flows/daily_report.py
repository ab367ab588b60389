"""Flow ``daily-report``: the KPIs of the last day, as a Prefect artifact and JSON.

The Markdown artifact (key ``daily-report``) is what a person reads in the UI;
the same figures go to ``<home>/reports/daily-report-<end>.json`` (and
``latest.json``) for anything that wants to chart them. Definitions of every
figure: :mod:`tasks.report`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from galleryflow.db import migrate
from galleryflow.db.models import utcnow
from galleryflow.core.fsutil import atomic_write_text
from galleryflow.notifications import notify_completion, notify_failure
from galleryflow.core.settings import get_settings
from tasks.report import DailyReport, compute_report, report_markdown


@task(name="compute-kpis", cache_policy=NO_CACHE)
def compute_kpis(start: datetime, end: datetime) -> DailyReport:
    settings = get_settings()
    migrate(settings.db_url)  # a fresh install may report before any set ran
    return compute_report(start, end, now=utcnow())


@flow(name="daily-report", log_prints=True, on_completion=[notify_completion],
      on_failure=[notify_failure], on_crashed=[notify_failure])
def daily_report(hours: int | None = None, end: datetime | None = None) -> DailyReport:
    """KPIs for the ``hours`` (default ``ops.report_hours``) before ``end`` (default now, UTC)."""
    settings = get_settings()
    logger = get_run_logger()
    end = (end or utcnow()).replace(tzinfo=None, microsecond=0)
    start = end - timedelta(hours=hours or settings.ops.report_hours)
    report = compute_kpis(start, end)
    create_markdown_artifact(key="daily-report", markdown=report_markdown(report),
                             description=f"KPIs {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    folder = settings.home / "reports"
    payload = report.model_dump_json(indent=2)
    path = folder / f"daily-report-{end:%Y%m%d-%H%M}.json"
    atomic_write_text(path, payload)
    atomic_write_text(folder / "latest.json", payload)
    if report.idle:
        logger.info("nothing happened in this window: %d rows await review; report in %s",
                    report.awaiting_review, path)
    else:
        logger.info("%d images in %d sets, %s images/h, %d awaiting review; report in %s",
                    report.images_processed, report.sets_processed,
                    report.images_per_hour if report.images_per_hour is not None else "–",
                    report.awaiting_review, path)
    return report
