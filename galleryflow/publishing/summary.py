"""What a whole publish did: per-row outcomes gathered from its chunks, in words and
as a Prefect table artifact."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel, Field

from galleryflow.core.prefect_run import run_logger
from galleryflow.core.stages import ChunkReport, FileOutcome

STAGE = "publish"

_log = logging.getLogger(__name__)


class PublishIncomplete(RuntimeError):
    """A chunk ended with a blocking error: its rows stay approved; rerun to resume."""


class PublishSummary(BaseModel):
    published: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    outcomes: list[FileOutcome] = Field(default_factory=list)
    blocking_errors: list[str] = Field(default_factory=list)
    # The zero-blocked rule (galleryflow.publishing.hold): each set held back and why,
    # and whether this run relaxed the rule (publish.allow_blocked_sets).
    held: list[str] = Field(default_factory=list)
    rule_relaxed: bool = False

    @property
    def complete(self) -> bool:
        return not self.blocking_errors


def summarize(
    reports: Sequence[ChunkReport], blocking: Sequence[tuple[list[int], str]] = ()
) -> PublishSummary:
    """The chunks' reports, plus the rows of chunks that ended with a blocking error."""
    summary = PublishSummary()
    for report in reports:
        for outcome in report.outcomes:
            summary.outcomes.append(outcome)
            bucket = {
                "ok": summary.published,
                "warning": summary.published,
                "skipped": summary.skipped,
            }.get(outcome.outcome, summary.failed)
            bucket.append(outcome.file)
    for row_ids, error in blocking:
        summary.blocking_errors.append(error)
        for row_id in row_ids:
            summary.failed.append(f"row {row_id}")
            summary.outcomes.append(
                FileOutcome(
                    file=f"row {row_id}",
                    stage=STAGE,
                    outcome="failed",
                    message=f"not published (left approved): {error}",
                )
            )
    return summary


def summary_markdown(summary: PublishSummary) -> str:
    lines = [
        f"**Publish**: {len(summary.published)} published, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed."
    ]
    for line in summary.held:
        if summary.rule_relaxed:
            lines.append(f"\n⚠ Zero-blocked rule relaxed for this run (publish.allow_blocked_sets): "
                         f"{line.replace(' is held back', ' would be held back')}")
        else:
            lines.append(f"\n⏸ Not published: {line}. Fix, regenerate or reject those rows "
                         "(`galleryflow review`), then run review-publish.")
    for error in summary.blocking_errors:
        lines.append(f"\n⚠ Blocking error (rows left approved; rerun to resume): {error}")
    return "\n".join(lines)


def publish_summary_artifact(summary: PublishSummary, key: str = "publish-summary") -> None:
    """A table artifact (published, skipped, failed per file), when in a Prefect run."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    from prefect.artifacts import create_table_artifact

    table = [
        {
            "file": o.file,
            "outcome": {"ok": "published"}.get(o.outcome, o.outcome),
            "detail": o.message,
        }
        for o in summary.outcomes
    ]
    try:
        create_table_artifact(table=table, key=key, description=summary_markdown(summary))
    except Exception as exc:  # the publish itself is done; never fail it for a report
        run_logger(_log).warning("could not create the publish summary artifact: %s", exc)
