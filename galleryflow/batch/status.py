"""Batch job status: one job with its per-file list, or all running and recent jobs.

Read from galleryflow's own DB (``batch_job``/``batch_file``), which the flow
writes as chunks finish, so the CLI, the MCP server and anyone with the DB can
follow a job without talking to Prefect. A job's id is its flow run id.

A killed process never writes its job's end. Each read therefore checks the
active jobs' owners (:mod:`galleryflow.core.liveness`): a job whose process is gone
becomes ``crashed`` (stored, with how far it got); one run on another host that
has been silent longer than ``batch.stale_after_seconds`` is shown as ``stale``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from galleryflow.db.engine import is_up_to_date, migrate, session_scope
from galleryflow.db.models import BatchFile, BatchJob, utcnow
from galleryflow.core.liveness import owner_alive
from galleryflow.core.settings import get_settings

ACTIVE = ("pending", "running")


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no batch job with id {job_id!r}")
        self.job_id = job_id


class FileStatus(BaseModel):
    input: str
    status: str  # done | skipped | failed
    output: str | None = None
    error: str | None = None
    note: str | None = None
    width: int | None = None
    height: int | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    seconds: float | None = None


class JobSummary(BaseModel):
    """The job summary every interface shows (the flow's result is this)."""

    id: str
    operation: str
    status: str  # pending | running | completed | partial | failed | crashed | stale
    progress: float = Field(description="Percent of files finished (done, skipped or failed).")
    completed: int = Field(description="Files whose output is ready, including skipped ones.")
    failed: int
    total: int
    duration: float | None = Field(description="Seconds, so far while running.")
    skipped: int = Field(default=0, description="Already done by an earlier run.")


class JobStatus(JobSummary):
    preset: str | None = None
    input_pattern: str
    output_directory: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    files: list[FileStatus] | None = None


def job_summary(job: BatchJob) -> JobSummary:
    return JobSummary(**_summary_fields(job))


def _summary_fields(job: BatchJob) -> dict[str, Any]:
    finished = job.completed + job.failed
    if job.total:
        progress = round(100.0 * finished / job.total, 1)
    else:
        progress = 100.0 if job.status not in ACTIVE else 0.0
    end = job.finished_at or utcnow()
    return {
        "id": job.id, "operation": job.operation, "status": job.status, "progress": progress,
        "completed": job.completed, "failed": job.failed, "total": job.total,
        "skipped": job.skipped, "duration": round((end - job.started_at).total_seconds(), 2),
    }


def _status(job: BatchJob, files: list[BatchFile] | None, stale: str | None = None) -> JobStatus:
    """``stale``: why a running job is shown as ``stale`` (see :func:`_check_alive`)."""
    fields = _summary_fields(job)
    if stale:
        fields["status"] = "stale"
    return JobStatus(
        **fields, preset=job.preset, input_pattern=job.input_pattern,
        output_directory=job.output_directory, parameters=job.parameters or {},
        error=stale or job.error, started_at=job.started_at, finished_at=job.finished_at,
        files=None if files is None else [
            FileStatus(input=f.input_path, status=f.status, output=f.output_path, error=f.error,
                       note=f.note, width=f.width, height=f.height, input_bytes=f.input_bytes,
                       output_bytes=f.output_bytes, seconds=f.seconds)
            for f in files
        ],
    )


def _check_alive(job: BatchJob, stale_after: timedelta) -> str | None:
    """Mark an active job whose process is gone ``crashed`` (in the DB). For one that
    cannot be checked from here and has been silent too long, return why it is to be
    shown ``stale`` (not stored: its host may still be working)."""
    if job.status not in ACTIVE:
        return None
    alive = owner_alive(job.owner)
    if alive is False:
        host, pid, _ = (job.owner or "::").rsplit(":", 2)
        job.status = "crashed"
        job.finished_at = job.heartbeat_at or job.started_at
        job.error = (
            f"the process running it (pid {pid} on {host}) ended without finishing: "
            f"{job.completed + job.failed} of {job.total} files done. Run the same job "
            "again: outputs already made are skipped."
        )
        return None
    last = job.heartbeat_at or job.started_at
    if alive is None and utcnow() - last > stale_after:
        return (f"no sign of life since {last:%Y-%m-%d %H:%M:%S} UTC from its process "
                f"({job.owner or 'unknown'}), which cannot be checked from here")
    return None


def _ensure_schema(url: str | None) -> None:
    if not is_up_to_date(url):
        migrate(url)


def get_job(job_id: str, files: bool = True, url: str | None = None) -> JobStatus:
    """One job; with ``files``, every file's outcome (failures first)."""
    _ensure_schema(url)
    with session_scope(url) as session:
        job = session.get(BatchJob, job_id)
        if job is None:
            raise JobNotFound(job_id)
        stale = _check_alive(job, _stale_after())
        rows = None
        if files:
            rows = list(session.scalars(
                select(BatchFile).where(BatchFile.job_id == job_id).order_by(BatchFile.id)))
            rows.sort(key=lambda f: f.status != "failed")
        return _status(job, rows, stale)


def list_jobs(recent: int | None = None, url: str | None = None) -> list[JobStatus]:
    """Every running or pending job, then the ``recent`` latest finished ones."""
    _ensure_schema(url)
    recent = get_settings().batch.recent_jobs if recent is None else recent
    with session_scope(url) as session:
        active = session.scalars(
            select(BatchJob).where(BatchJob.status.in_(ACTIVE)).order_by(BatchJob.started_at.desc())
        ).all()
        stale = {job.id: _check_alive(job, _stale_after()) for job in active}
        session.flush()  # crashed jobs now list with the finished ones
        active = [job for job in active if job.status in ACTIVE]
        done = session.scalars(
            select(BatchJob).where(BatchJob.status.not_in(ACTIVE))
            .order_by(BatchJob.started_at.desc()).limit(recent)
        ).all()
        return [_status(job, None, stale.get(job.id)) for job in (*active, *done)]


def _stale_after() -> timedelta:
    return timedelta(seconds=get_settings().batch.stale_after_seconds)
