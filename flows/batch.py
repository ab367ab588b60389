"""Flow ``batch-process``: one-off image jobs (resize, convert, compress, watermark,
thumbnail) over a glob, with presets, live progress and a per-file report.

The job's id is its flow run id. The flow:

1. resolves preset + parameters (a bad value fails the job before any work);
2. streams the glob once to count the files and estimate the output bytes, and
   checks free disk against that estimate;
3. streams it again in chunks to ``process_chunk`` task runs, at most ``workers``
   in flight (threads: Pillow releases the GIL), so memory stays bounded however
   many files match;
4. records every file's outcome (``batch_file``), keeps a progress artifact up
   to date, and ends with a table artifact and the job summary.

:func:`start_batch_job` starts the same flow in the background (the MCP server
uses it) and returns the job id at once.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_run
from sqlalchemy import case, select

from galleryflow.imaging import media
from galleryflow.batch.outputs import glob_base, iter_inputs
from galleryflow.batch.status import JobSummary, job_summary
from galleryflow.db.engine import migrate, session_scope
from galleryflow.db.models import BatchFile, BatchJob, utcnow
from galleryflow.core.fsutil import free_bytes
from galleryflow.core.liveness import current_owner
from galleryflow.batch.presets import BatchRequest, PresetError, ResolvedJob, resolve
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import Settings, get_settings
from tasks.batch_ops import (
    ChunkSummary,
    JobSpec,
    estimate_output_bytes,
    forget_runtime,
    load_font,
    process_chunk,
    runtime,
)

TABLE_ROWS = 500  # a table artifact with 10,000 rows helps nobody: failures first, then a sample


class BatchJobError(RuntimeError):
    """The job as a whole cannot run (parameters, no files, no disk)."""


def _chunks(paths: Iterator[Path], size: int) -> Iterator[list[str]]:
    while chunk := [str(p) for p in itertools.islice(paths, size)]:
        yield chunk


def _upsert_job(job_id: str, request: BatchRequest, status: str, operation: str | None) -> None:
    with session_scope() as session:
        job = session.get(BatchJob, job_id)
        if job is None:
            job = BatchJob(id=job_id, started_at=utcnow())
            session.add(job)
        job.operation = operation or request.operation or "?"
        job.preset = request.preset
        job.input_pattern = request.input_pattern[:1024]
        job.output_directory = request.output_directory[:1024]
        job.parameters = request.parameters or {}
        job.status = status
        job.owner, job.heartbeat_at = current_owner(), utcnow()


def _set_job(job_id: str, **values: Any) -> None:
    with session_scope() as session:
        job = session.get(BatchJob, job_id)
        if job is not None:
            for key, value in values.items():
                setattr(job, key, value)


def _check_job(job: ResolvedJob) -> None:
    """Faults that would fail every file, found once before any work."""
    if job.params.watermark_text:
        load_font(job.params.watermark_font, job.params.watermark_size or 24)


def estimate_job(pattern: str, job: ResolvedJob, out_dir: Path) -> tuple[int, int]:
    """(files, estimated output bytes): one streaming pass over headers only."""
    total = estimated = 0
    for path in iter_inputs(pattern, exclude=out_dir):
        total += 1
        try:
            estimated += estimate_output_bytes(media.probe(path), job.operation, job.params)
        except Exception:
            pass  # its fault is reported when it is processed
    return total, estimated


def check_disk(out_dir: Path, needed: int, headroom: int) -> None:
    free = free_bytes(out_dir)
    if free < needed + headroom:
        raise BatchJobError(
            f"Not enough free disk on {out_dir}: about {needed / 1e6:.0f} MB needed for the "
            f"outputs plus {headroom / 1e6:.0f} MB kept free, {free / 1e6:.0f} MB available"
        )


def _table_rows(job_id: str) -> list[dict[str, Any]]:
    failed_first = case((BatchFile.status == "failed", 0), else_=1)
    with session_scope() as session:
        rows = session.scalars(
            select(BatchFile).where(BatchFile.job_id == job_id)
            .order_by(failed_first, BatchFile.id).limit(TABLE_ROWS)
        ).all()
        return [
            {"file": Path(r.input_path).name, "status": r.status,
             "output": Path(r.output_path).name if r.output_path else "",
             "size": f"{r.width}×{r.height}" if r.width else "",
             "bytes": r.output_bytes or "", "error": r.error or "", "note": r.note or ""}
            for r in rows
        ]


def _finish(job_id: str, stop_reason: str | None) -> JobSummary:
    with session_scope() as session:
        job = session.get(BatchJob, job_id)
        assert job is not None
        if stop_reason:
            job.status, job.error = "failed", stop_reason
        elif job.total and job.failed >= job.total:
            job.status = "failed"
        elif job.failed:
            job.status = "partial"
        else:
            job.status = "completed"
        job.finished_at = utcnow()
    return job_summary(job)


@flow(name="batch-process", description="Resize, convert, compress, watermark or thumbnail "
      "files matching a glob, with presets and a per-file report.")
def batch_process(
    input_pattern: str,
    operation: str | None = None,
    output_directory: str = "batch-output",
    parameters: dict[str, Any] | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """Run one batch job; returns ``{id, operation, status, progress, completed, failed,
    skipped, total, duration}``."""
    logger = get_run_logger()
    settings = get_settings()
    job_id = current_run.id or str(uuid.uuid4())
    request = BatchRequest(input_pattern=input_pattern, operation=operation,  # type: ignore[arg-type]
                           output_directory=output_directory, parameters=parameters or {},
                           preset=preset)
    migrate(settings.db_url)
    _upsert_job(job_id, request, "running", operation)
    try:
        job = resolve(operation, preset, parameters, settings)
        _check_job(job)
        _set_job(job_id, operation=job.operation)
        out_dir = Path(output_directory).expanduser().resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        total, estimated = estimate_job(input_pattern, job, out_dir)
        if total == 0:
            raise BatchJobError(f"No files match {input_pattern!r}")
        headroom = settings.batch.disk_headroom_bytes
        check_disk(out_dir, estimated, headroom)
        _set_job(job_id, total=total)
        logger.info("batch %s: %s on %d files → %s (about %.0f MB)", job_id, job.operation,
                    total, out_dir, estimated / 1e6)
        spec = JobSpec(job_id=job_id, operation=job.operation, params=job.params,
                       base_dir=str(glob_base(input_pattern)), output_directory=str(out_dir),
                       disk_headroom_bytes=headroom)
        stop_reason = _run_chunks(spec, input_pattern, out_dir, total, settings)
    except (PresetError, BatchJobError) as exc:
        _set_job(job_id, status="failed", error=str(exc), finished_at=utcnow())
        forget_runtime(job_id)
        raise
    except BaseException as exc:
        _set_job(job_id, status="failed", error=f"stopped: {type(exc).__name__}: {exc}",
                 finished_at=utcnow())
        forget_runtime(job_id)
        raise
    summary = _finish(job_id, stop_reason)
    rows = _table_rows(job_id)
    create_table_artifact(
        table=rows, key=f"batch-{job_id[:8]}-files",
        description=f"batch {job.operation}: {summary.completed} done ({summary.skipped} "
                    f"already done), {summary.failed} failed of {summary.total}"
                    + (f"; first {TABLE_ROWS} rows, failures first" if total > TABLE_ROWS else ""),
    )
    if stop_reason:
        raise BatchJobError(stop_reason)
    logger.info("batch %s %s: %d done, %d failed of %d", job_id, summary.status,
                summary.completed, summary.failed, summary.total)
    return summary.model_dump(mode="json")


def _run_chunks(spec: JobSpec, pattern: str, out_dir: Path, total: int,
                settings: Settings) -> str | None:
    """Submit chunks as the glob streams, at most ``workers`` in flight."""
    workers = settings.batch.workers or os.cpu_count() or 1
    state = runtime(spec.job_id)
    state.progress = StageProgress("batch", total, key=f"batch-{spec.job_id[:8]}-progress")
    in_flight: deque[PrefectFuture[ChunkSummary]] = deque()
    try:
        for files in _chunks(iter_inputs(pattern, exclude=out_dir), settings.batch.chunk_size):
            if state.stop_reason:
                break
            in_flight.append(process_chunk.submit(files, spec))
            if len(in_flight) >= workers:
                in_flight.popleft().result()
        while in_flight:
            in_flight.popleft().result()
        return state.stop_reason
    finally:
        forget_runtime(spec.job_id)


# ---------------------------------------------------------------- starting jobs

def run_batch_job(request: BatchRequest) -> dict[str, Any]:
    """Run a job in this process and wait (the CLI); returns the summary."""
    resolve(request.operation, request.preset, request.parameters)  # fail fast
    return batch_process(**request.model_dump())


_threads: dict[str, threading.Thread] = {}


def start_batch_job(request: BatchRequest) -> str:
    """Start a job in a background thread and return its id (= flow run id) at once.

    The flow run is created first so the id exists before any work starts, and a
    ``pending`` job row makes it visible to ``get_batch_status`` immediately.
    """
    from prefect import get_client
    from prefect.flow_engine import run_flow

    job = resolve(request.operation, request.preset, request.parameters)  # fail fast
    _check_job(job)
    migrate()
    parameters = request.model_dump()
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(batch_process, parameters=parameters)
    job_id = str(flow_run.id)
    _upsert_job(job_id, request, "pending", job.operation)

    def target() -> None:
        run_flow(batch_process, flow_run=flow_run, parameters=parameters, return_type="state")

    thread = threading.Thread(target=target, name=f"batch-{job_id[:8]}", daemon=True)
    _threads[job_id] = thread
    thread.start()
    return job_id


def wait_for_job(job_id: str, timeout: float | None = None) -> bool:
    """Wait for a job started here; False when it is still running after ``timeout``."""
    thread = _threads.get(job_id)
    if thread is None:
        return True
    thread.join(timeout)
    return not thread.is_alive()
