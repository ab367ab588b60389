"""Flow ``batch-process``: one-off image jobs (resize, convert, compress, watermark,
thumbnail) over a glob, with presets, live progress and a per-file report — the
form a batch job takes when it runs on a Prefect worker (the ``batch-process/
on-demand`` deployment: from the UI, or started by ``galleryflow batch`` / the MCP
server when a Prefect server with a worker for it is configured).

The flow:

1. takes a job already checked and recorded by its starter (``job_id``), or checks
   the request itself (:func:`galleryflow.batch.preflight.prepare`: parameters,
   glob, folders, free disk) and records it under its flow run id;
2. streams the glob in chunks to ``process_chunk`` task runs, at most ``workers`` in
   flight, so memory stays bounded however many files match; each file is recorded
   as it finishes, and a stop (disk full) is read from the job's row by every chunk;
3. keeps a progress artifact up to date and ends with a table artifact and the
   job summary; a job that had to stop fails the flow run with the reason.

Everything it reads and writes about the job goes through :mod:`galleryflow.batch.jobs`.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_run

from galleryflow.batch import jobs
from galleryflow.batch.outputs import iter_inputs
from galleryflow.batch.preflight import JobRefused, prepare
from galleryflow.batch.presets import BatchRequest
from galleryflow.batch.runner import chunks
from galleryflow.batch.status import JobSummary, get_job
from galleryflow.core.progress import StageProgress, flushed
from galleryflow.core.settings import get_settings
from galleryflow.db.engine import migrate
from tasks.batch_ops import process_chunk


class BatchJobError(RuntimeError):
    """The job stopped as a whole (disk full, the output folder failed)."""


def _record(request: BatchRequest, job_id: str) -> None:
    """Check and record a request given to the flow itself (from the Prefect UI)."""
    settings = get_settings()
    try:
        prepared = prepare(request, settings)
    except JobRefused as exc:
        jobs.create_job(job_id, operation=request.operation or "?", preset=request.preset,
                        input_pattern=request.input_pattern,
                        output_directory=request.output_directory,
                        record=jobs.JobRecord(requested=request.parameters), total=0,
                        status="failed")
        jobs.fail_job(job_id, str(exc))
        raise
    jobs.create_prepared(job_id, request, prepared, settings, status="running")


@flow(name="batch-process", description="Resize, convert, compress, watermark or thumbnail "
      "files matching a glob, with presets and a per-file report.")
@flushed
def batch_process(
    input_pattern: str = "",
    operation: str | None = None,
    output_directory: str = "batch-output",
    parameters: dict[str, Any] | None = None,
    preset: str | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Run one batch job; returns ``{id, operation, status, progress, completed, failed,
    not_processed, skipped, total, duration}``. ``job_id``: a job its starter has
    already checked and recorded (the other arguments are then ignored)."""
    logger = get_run_logger()
    migrate(get_settings().db_url)
    if job_id is None:
        job_id = current_run.id or str(uuid.uuid4())
        _record(BatchRequest(input_pattern=input_pattern, operation=operation,
                             output_directory=output_directory,
                             parameters=parameters or {}, preset=preset), job_id)
    spec, pattern, record = jobs.load_spec(job_id)
    jobs.mark_running(job_id)
    total = jobs.counts(job_id)[1]
    logger.info("batch %s: %s on %d files → %s", job_id, spec.operation, total,
                spec.output_directory)
    workers = max(1, record.workers)
    # Small jobs still use every worker: chunks no larger than an even share.
    size = max(1, min(record.chunk_size, math.ceil(total / workers) if total else 1))
    progress = StageProgress("batch", total, key=f"batch-{job_id[:8]}-progress")
    out = Path(spec.output_directory)
    seen = 0
    in_flight: deque[PrefectFuture[dict[str, int]]] = deque()

    def settle(future: PrefectFuture[dict[str, int]]) -> None:
        future.result()
        progress.advance(jobs.counts(job_id)[0] - progress.done)

    try:
        for files in chunks(iter_inputs(pattern, exclude=out), size):
            seen += len(files)
            in_flight.append(process_chunk.submit(files, spec))
            if len(in_flight) >= workers:
                settle(in_flight.popleft())
        while in_flight:
            settle(in_flight.popleft())
    except BaseException as exc:
        jobs.fail_job(job_id, f"stopped: {type(exc).__name__}: {exc}")
        raise
    jobs.finish(job_id, seen)
    summary = get_job(job_id, files=False)
    create_table_artifact(
        table=jobs.table_rows(job_id), key=f"batch-{job_id[:8]}-files",
        description=f"batch {summary.operation}: {summary.completed} completed ({summary.skipped} "
                    f"already done), {summary.failed} failed, {summary.not_processed} not "
                    f"processed of {summary.total}"
                    + (f"; first {jobs.TABLE_ROWS} rows, failures first"
                       if summary.total > jobs.TABLE_ROWS else ""),
    )
    if summary.status == "failed" and summary.error:
        raise BatchJobError(summary.error)
    logger.info("batch %s %s: %d completed, %d failed of %d", job_id, summary.status,
                summary.completed, summary.failed, summary.total)
    return summary.model_dump(mode="json", include=set(JobSummary.model_fields))
