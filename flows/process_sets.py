"""Flow ``process-sets``: photo sets from an intake folder to the review gate.

Stage 1 validates every chosen set before anything is written. Then each set is
one *session*: stages 2–4 run in chunks inside a Prefect transaction whose
``open-session`` task carries the rollback hook, so a blocking error undoes
exactly this session's copies and rows and a rerun starts clean. One set's
failure does not undo another set's session; the run ends Failed if any set
failed.

The flow composes tasks and holds no image logic.
"""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import transaction
from pydantic import BaseModel, Field
from sqlalchemy import update

from galleryflow.db import ImageSet, session_scope
from galleryflow.db.models import utcnow
from galleryflow.intake.queue import discover_sets
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.prefect_run import check_limits_soon
from galleryflow.core.prefect_run import flow_run_id as current_flow_run_id
from galleryflow.core.progress import flushed, send_later
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import SetStatus
from galleryflow.core.stages import ChunkReport, FileOutcome, chunked
from tasks.exif import ExifData, ExifInput, read_exif_chunk
from tasks.intake import (IntakeItem, IntakeResult, intake_chunk, intake_report, open_session,
                          prepare_db, tidy_pending)
from tasks.review_rows import review_rows_chunk
from tasks.publish import drop_web_images_ahead, publishable_row_ids
from tasks.recovery import recover
from tasks.rollback import record_cause
from tasks.scoring import log_scoring_setup
from tasks.captioning import caption_chunk, start_captioning
from tasks.proof import publish_proof_artifacts
from tasks.validate import SetReport, SetValidationError, ValidationReport, validate_sets
from flows.fanout import score_and_resize_rows
from flows.gate import GateResult
from flows.review_publish import review_and_publish
from galleryflow.publishing.summary import PublishSummary


class SetOutcome(BaseModel):
    name: str
    image_set_id: int | None = None
    status: str
    images: int = 0
    excluded: int = 0
    row_ids: list[int] = Field(default_factory=list)
    # files re-exported under a known name with other content: new photos for review
    changed: list[str] = Field(default_factory=list)
    error: str | None = None
    stage_seconds: dict[str, float] = Field(default_factory=dict)


class RunSummary(BaseModel):
    flow_run_id: str | None
    sets: list[SetOutcome]
    review: GateResult | None = None
    publish: PublishSummary | None = None

    @property
    def failed(self) -> list[SetOutcome]:
        return [s for s in self.sets if s.status in (SetStatus.FAILED, SetStatus.ROLLED_BACK,
                                                     SetStatus.ROLLBACK_FAILED)]


class SetsFailed(RuntimeError):
    """Some sets were rolled back; the others completed."""


def _results(futures: list[PrefectFuture]) -> list[Any]:
    return [f.result() for f in futures]


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 3)


def _ingest(report: SetReport, image_set_id: int, settings: Settings,
            timings: dict[str, float], outcomes: list[FileOutcome],
            changed: list[str]) -> list[int]:
    """Stages 2–4 for one set's session; returns the row ids that go on, and adds the
    files re-exported with new content to ``changed``."""
    size = settings.chunk_size
    items = [IntakeItem.from_check(c) for c in report.accepted]
    with _timed(timings, "intake"):
        copied: list[IntakeResult] = [
            r for chunk in _results([intake_chunk.submit(c, image_set_id) for c in chunked(items, size)])
            for r in chunk
        ]
    outcomes += intake_report(copied).outcomes
    with _timed(timings, "exif"):
        exif_inputs = [ExifInput(sha256=r.sha256, path=r.incoming_path) for r in copied]
        exifs: list[ExifData] = [
            e for chunk in _results([read_exif_chunk.submit(c) for c in chunked(exif_inputs, size)])
            for e in chunk
        ]
    with _timed(timings, "review_rows"):
        by_sha = {e.sha256: e for e in exifs}
        row_ids: list[int] = []
        # One photo is one content: the same bytes under two names make one row (and
        # two chunks must not both insert it).
        first: dict[str, str] = {}
        unique: list[IntakeResult] = []
        for r in copied:
            if r.sha256 in first:
                outcomes.append(FileOutcome(file=r.name, stage="review_rows", outcome="skipped",
                                            message=f"same content as {first[r.sha256]}: one photo, one row"))
            else:
                first[r.sha256] = r.name
                unique.append(r)
        futures = [
            review_rows_chunk.submit(chunk, [by_sha[r.sha256] for r in chunk], image_set_id)
            for chunk in chunked(unique, size)
        ]
        for ids, chunk_report in _results(futures):
            row_ids += ids
            outcomes += chunk_report.outcomes
            changed += [o.file for o in chunk_report.outcomes if o.outcome == "changed"]
    return row_ids


def _scores_and_model_images(row_ids: list[int], image_set_id: int,
                             settings: Settings) -> list[ChunkReport]:
    """Stages 5 and 6 in one chunk task each, on one decode per photo."""
    log_scoring_setup()
    return score_and_resize_rows(row_ids, image_set_id, settings.chunk_size)


def _captioning(row_ids: list[int], image_set_id: int, settings: Settings) -> list[ChunkReport]:
    plan = start_captioning(image_set_id)  # fails fast (StageError) when the model is missing
    # A model's chunk is what one ``ollama`` slot is held for; offline drafts hold no slot
    # and run one chunk at a time (tasks.captioning), so they take the stages' chunk size:
    # fewer task runs (4 instead of 32 for 500 photos), each with its progress artifact.
    size = settings.ollama.chunk_size if plan.mode == "model" else settings.chunk_size
    reports = _results([caption_chunk.submit(c, image_set_id, plan)
                        for c in chunked(row_ids, size)])
    publish_proof_artifacts(image_set_id)
    return reports


# Stages 5–7 run inside the session's transaction after stages 2–4: each takes
# the session's row ids and returns its chunk reports. A blocking error in any of
# them rolls the session back. Stages 5 (scoring) and 6 (model_resize) run as one
# entry, sharing one decode per photo; their reports keep their own stage names,
# and their time is told apart (_record_seconds).
StageFn = Callable[[list[int], int, Settings], list[ChunkReport]]
LATER_STAGES: list[tuple[str, StageFn]] = [
    ("scoring+model_resize", _scores_and_model_images),
    ("captioning", _captioning),
]


def _record_seconds(timings: dict[str, float], entry: str, wall: float,
                    reports: list[ChunkReport]) -> None:
    """Add an entry's wall time to ``timings``.

    An entry named ``a+b`` runs stages ``a`` and ``b`` in the same chunks: its time
    is split between them in proportion to the time its chunks spent on each
    (``ChunkReport.seconds``); with nothing done it counts under ``a`` (``b`` gets
    0). Any other entry counts under its name.
    """
    stages = entry.split("+")
    spent = dict.fromkeys(stages, 0.0)
    for report in reports:
        if report.stage in spent:
            spent[report.stage] += report.seconds
    total = sum(spent.values())
    for stage in stages:
        share = spent[stage] / total if total > 0 else float(stage == stages[0])
        timings[stage] = round(timings.get(stage, 0.0) + wall * share, 3)


def _finish_session(image_set_id: int, status: str, timings: dict[str, float],
                    settings: Settings) -> None:
    with session_scope() as db:
        db.execute(update(ImageSet).where(ImageSet.id == image_set_id).values(
            status=status, stage_seconds=timings, finished_at=utcnow()))
    SessionLedger(settings, image_set_id).discard()  # committed: nothing left to undo


def process_one_set(report: SetReport, settings: Settings, flow_run_id: str | None,
                    location: str | None, subject: str | None,
                    outcomes: list[FileOutcome]) -> SetOutcome:
    logger = get_run_logger()
    timings: dict[str, float] = {}
    outcome = SetOutcome(name=report.name, status=SetStatus.RUNNING,
                         images=len(report.accepted), excluded=len(report.excluded))
    outcomes += [FileOutcome(file=f.name, stage="validate", outcome="excluded",
                             message="; ".join(f.messages)) for f in report.excluded]
    try:
        with transaction():
            outcome.image_set_id = open_session(report, flow_run_id, location or settings.location, subject)
            row_ids = _ingest(report, outcome.image_set_id, settings, timings, outcomes,
                              outcome.changed)
            for stage, run_stage in LATER_STAGES:
                start = time.perf_counter()
                reports = run_stage(row_ids, outcome.image_set_id, settings)
                _record_seconds(timings, stage, time.perf_counter() - start, reports)
                for chunk_report in reports:
                    outcomes += chunk_report.outcomes
            outcome.row_ids = row_ids
    except Exception as exc:
        outcome.status = SetStatus.ROLLED_BACK
        outcome.error = f"{type(exc).__name__}: {exc}"
        logger.error("set %s: blocking error, session rolled back: %s", report.name, outcome.error)
        if outcome.image_set_id is not None:
            outcome.status = record_cause(outcome.image_set_id, outcome.error)
        return outcome
    outcome.status = SetStatus.COMPLETED
    outcome.stage_seconds = timings
    tidy_pending(settings, report.name)
    if outcome.changed:
        logger.warning("set %s: %d photo(s) changed since the last run (re-exported under the "
                       "same name): %s; each is a new photo for review, the earlier versions "
                       "keep their own bytes", report.name, len(outcome.changed),
                       ", ".join(outcome.changed))
    _finish_session(outcome.image_set_id, outcome.status, timings, settings)
    logger.info("set %s: %d rows ready (%s)", report.name, len(row_ids),
                ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return outcome


def _note_unpublished(set_names: list[str]) -> None:
    """Say so when a set of this run has approved rows an earlier publish did not finish."""
    waiting = publishable_row_ids(set_keys=set_names)
    if waiting:
        get_run_logger().warning(
            "%d approved row(s) of %s are not published yet (an earlier publish was "
            "interrupted): `galleryflow publish %s` finishes them", len(waiting),
            ", ".join(set_names), " ".join(set_names))


# The run's reports are sent on the progress thread (send_later), not here: each is a
# round trip that the next stage would otherwise wait for. The flow flushes them before
# it ends (@flushed).
def _publish_validation(report: ValidationReport) -> None:
    rows = report.rows()
    if rows:
        send_later("validation table", lambda: create_table_artifact(
            key="validation", table=rows,
            description="Stage 1: every file checked, with its verdict"))


def _publish_outcomes(outcomes: list[FileOutcome], summary: RunSummary) -> None:
    if outcomes:
        table = [o.model_dump() for o in outcomes]
        send_later("file outcomes table", lambda: create_table_artifact(
            key="file-outcomes", table=table, description="Per-file outcome of each stage"))
    lines = ["| set | status | images | excluded | re-exported (new photos) | error |",
             "|---|---|---|---|---|---|"]
    for s in summary.sets:
        lines.append(f"| {s.name} | {s.status} | {s.images} | {s.excluded} | "
                     f"{', '.join(s.changed)} | {s.error or ''} |")
    send_later("run summary", lambda: create_markdown_artifact(
        key="run-summary", markdown="\n".join(lines), description="process-sets: one line per set"))


@flow(name="process-sets", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
@flushed
def process_sets(
    set_dirs: list[str] | None = None,
    intake_dir: str | None = None,
    location: str | None = None,
    subject: str | None = None,
    strict: bool | None = None,
) -> RunSummary:
    """Validate the sets, then take each one through the pipeline.

    ``set_dirs`` names set folders; ``intake_dir`` (scheduled deployments) takes
    the ready sets under an intake folder instead. Nothing to do is a quick,
    successful run that says so.
    """
    settings = get_settings()
    logger = get_run_logger()
    flow_run_id = current_flow_run_id()
    set_dirs = list(set_dirs or [])
    if intake_dir:
        # Sets a dead run had claimed go back to the queue first, so this run takes them.
        prepare_db()
        recover()
        set_dirs += [str(p) for p in discover_sets(Path(intake_dir), settings)]
    if not set_dirs:
        logger.info("nothing to do: no sets%s", f" ready under {intake_dir}" if intake_dir else " given")
        return RunSummary(flow_run_id=flow_run_id, sets=[])
    # The limits stages 5, 7 and 9 hold slots of, checked while validation and intake work.
    check_limits_soon({"scoring": settings.scoring.concurrency,
                       "ollama": settings.ollama.concurrency_limit,
                       "publish": settings.publish.concurrency})
    report = validate_sets(set_dirs, strict)
    _publish_validation(report)
    if not report.ok:
        raise SetValidationError(report)
    warnings = sum(bool(f.messages) for s in report.sets for f in s.accepted)
    logger.info("validated %d sets: %d images accepted, %d excluded, %d with warnings",
                len(report.sets), sum(len(s.accepted) for s in report.sets),
                sum(len(s.excluded) for s in report.sets), warnings)
    prepare_db()
    recover()  # sessions of runs that died: rolled back before this run takes their sets
    _note_unpublished([s.name for s in report.sets])
    outcomes: list[FileOutcome] = []
    try:
        summary = RunSummary(flow_run_id=flow_run_id, sets=[
            process_one_set(set_report, settings, flow_run_id, location, subject, outcomes)
            for set_report in report.sets
        ])
        _publish_outcomes(outcomes, summary)
        ready = [i for s in summary.sets if s.status == SetStatus.COMPLETED for i in s.row_ids]
        if ready:
            summary.review, summary.publish = review_and_publish(ready, settings, flow_run_id)
    finally:
        drop_web_images_ahead()  # what stage 7 queued for rows no publish of this run took
    if summary.failed:
        raise SetsFailed("; ".join(f"{s.name}: {s.error}" for s in summary.failed))
    return summary
