"""Flow ``cleanup``: work files and temporary artifacts older than N days.

Scheduled weekly (``prefect.yaml``). Never removes an original, the incoming
copy of a row that is not published, or a published file: see
:mod:`tasks.cleanup` for exactly what goes and the guard every deletion passes.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from galleryflow.notifications import notify_completion, notify_failure
from galleryflow.core.settings import get_settings
from tasks.cleanup import CleanupReport, clean_old_files


def _markdown(report: CleanupReport) -> str:
    verb = "would remove" if report.dry_run else "removed"
    lines = [
        f"# cleanup: {verb} {len(report.removed)} item(s), {report.bytes_freed / 1e6:,.1f} MB",
        f"Work files and partial writes older than {report.older_than_days:g} days, "
        f"task results older than {report.results_days:g} days.",
        "", "| kind | count |", "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in sorted(report.by_kind().items())),
    ]
    if report.refused:
        lines += ["", f"Kept by the guard (originals, unpublished incoming copies, site files): "
                      f"{len(report.refused)}"]
    if report.cleared_row_paths:
        lines += ["", f"Row paths cleared (files gone, recreated when needed): {report.cleared_row_paths}"]
    return "\n".join(lines)


@flow(name="cleanup", log_prints=True, on_completion=[notify_completion],
      on_failure=[notify_failure], on_crashed=[notify_failure])
def cleanup(older_than_days: float | None = None, results_days: float | None = None,
            dry_run: bool = False) -> CleanupReport:
    """Remove work files and temporary artifacts older than ``older_than_days``
    (default: ``ops.cleanup_days``); ``dry_run`` only lists them."""
    settings = get_settings()
    logger = get_run_logger()
    days = settings.ops.cleanup_days if older_than_days is None else older_than_days
    keep_results = settings.ops.results_days if results_days is None else results_days
    report = clean_old_files(days, keep_results, dry_run)
    if not report.removed:
        logger.info("nothing to clean: no work file or temporary artifact older than %g days", days)
    else:
        logger.info("%s %d item(s), %.1f MB: %s", "would remove" if dry_run else "removed",
                    len(report.removed), report.bytes_freed / 1e6, report.by_kind())
    create_markdown_artifact(key="cleanup", markdown=_markdown(report),
                             description="What cleanup removed, by kind")
    return report
