"""Batch job status: one job with its per-file list, or all running and recent jobs.

Read from galleryflow's own DB (``batch_job``/``batch_file``), which the workers
write as each file finishes, so the CLI, the MCP server and anyone with the DB can
follow a job without talking to Prefect. The words are the same everywhere: a
job's ``completed``, ``failed`` and ``not_processed`` files; a file's ``path``
and ``status`` (``completed``, ``skipped``, ``failed``, ``not processed``).

A killed process never writes its job's end. Each read therefore checks the
active jobs' owners (:mod:`galleryflow.core.liveness`): a job whose process is gone
becomes ``crashed`` (stored, with how far it got, counting every output its
claims say it finished, so its progress equals the outputs on disk); one run on
another host that has been silent longer than ``batch.stale_after_seconds`` is
shown as ``stale``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import object_session

from galleryflow.batch.jobs import read_record
from galleryflow.batch.outputs import OutputRegistry
from galleryflow.db.engine import is_up_to_date, migrate, session_scope
from galleryflow.db.models import BatchFile, BatchJob, utcnow
from galleryflow.core.liveness import owner_alive
from galleryflow.core.settings import get_settings

ACTIVE = ("pending", "running")
JobState = Literal["pending", "running", "completed", "partial", "failed", "crashed", "stale"]
FileState = Literal["completed", "skipped", "failed", "not processed"]
_OLD_WORDS = {"done": "completed"}  # per-file statuses stored before 0.2


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no batch job with id {job_id!r}")
        self.job_id = job_id


class FileStatus(BaseModel):
    """One input file and what became of it."""

    path: str = Field(description="The input file (absolute).")
    status: FileState = Field(description="completed: output written; skipped: an earlier "
                              "run's output is complete and kept; failed: this file's own "
                              "fault (see error); not processed: the job stopped first.")
    output: str | None = Field(default=None, description="The output file (absolute).")
    error: str | None = Field(default=None, description="Why it failed or was not processed, "
                              "naming the file.")
    note: str | None = Field(default=None, description="What to know about a success "
                             "(enlarged, first frame used, kept the original…).")
    width: int | None = None
    height: int | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    seconds: float | None = None


class JobSummary(BaseModel):
    """The job summary every interface shows."""

    id: str = Field(description="The job id (for get_batch_status / `batch status ID`).")
    operation: str
    status: JobState = Field(description="pending, running, completed (every file), partial "
                             "(some files failed), failed (the job stopped or every file "
                             "failed: see error), crashed (its process died), stale (its "
                             "host is silent).")
    progress: float = Field(description="Percent of files finished (completed or failed).")
    completed: int = Field(description="Files whose output is ready, including skipped ones.")
    failed: int = Field(description="Files that failed through their own fault.")
    not_processed: int = Field(default=0, description="Files not (yet) processed: still to do "
                               "while running; left undone when the job stopped or crashed.")
    total: int = Field(description="Files matching the pattern.")
    duration: float | None = Field(description="Seconds, so far while running.")
    skipped: int = Field(default=0, description="Completed by an earlier run (outputs kept).")


class JobStatus(JobSummary):
    preset: str | None = None
    input_pattern: str = Field(description="The glob, absolute.")
    output_directory: str = Field(description="The output folder, absolute.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="What ran: every parameter, the preset's resolved.")
    requested: dict[str, Any] = Field(
        default_factory=dict, description="The parameters as given (overrides of the preset).")
    error: str | None = Field(default=None, description="Why the job stopped or crashed.")
    started_at: datetime
    finished_at: datetime | None = None
    files: list[FileStatus] | None = Field(default=None, description="Every file, failures "
                                           "first (with include_files).")


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
        "not_processed": max(0, job.total - finished), "skipped": job.skipped,
        "duration": round((end - job.started_at).total_seconds(), 2),
    }


def _status(job: BatchJob, files: list[BatchFile] | None, stale: str | None = None) -> JobStatus:
    """``stale``: why a running job is shown as ``stale`` (see :func:`_check_alive`)."""
    fields = _summary_fields(job)
    if stale:
        fields["status"] = "stale"
    record = read_record(job.parameters)
    return JobStatus(
        **fields, preset=job.preset, input_pattern=job.input_pattern,
        output_directory=job.output_directory, parameters=record.resolved,
        requested=record.requested,
        error=stale or job.error, started_at=job.started_at, finished_at=job.finished_at,
        files=None if files is None else [
            FileStatus(path=f.input_path, status=_OLD_WORDS.get(f.status, f.status),
                       output=f.output_path, error=f.error, note=f.note, width=f.width,
                       height=f.height, input_bytes=f.input_bytes,
                       output_bytes=f.output_bytes, seconds=f.seconds)
            for f in files
        ],
    )


def _credit_finished_outputs(session, job: BatchJob) -> int:  # type: ignore[no-untyped-def]
    """Record the outputs a dead job finished but did not get to record (it died between
    writing a file and its row): its claims say which. Returns how many."""
    recorded = set(session.scalars(select(BatchFile.input_path).where(BatchFile.job_id == job.id)))
    missing = [c for c in OutputRegistry(Path(job.output_directory)).finished_by(job.id)
               if c.input not in recorded]
    for claim in missing:
        session.add(BatchFile(job_id=job.id, input_path=claim.input, output_path=claim.output,
                              status="completed", output_bytes=claim.size,
                              note="written just before the job's process died",
                              finished_at=utcnow()))
    job.completed += len(missing)
    return len(missing)


def _check_alive(job: BatchJob, stale_after: timedelta) -> str | None:
    """Mark an active job whose process is gone ``crashed`` (in the DB). For one that
    cannot be checked from here and has been silent too long, return why it is to be
    shown ``stale`` (not stored: its host may still be working)."""
    if job.status not in ACTIVE:
        return None
    alive = owner_alive(job.owner)
    if alive is False:
        host, pid, _ = (job.owner or "::").rsplit(":", 2)
        _credit_finished_outputs(object_session(job), job)
        job.status = "crashed"
        job.finished_at = job.heartbeat_at or job.started_at
        job.error = (
            f"the process running it (pid {pid} on {host}) ended without finishing: "
            f"{job.completed} of {job.total} files completed, {job.failed} failed. Run the "
            "same job again: outputs already made are skipped."
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
            rows.sort(key=lambda f: f.status not in ("failed", "not processed"))
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
