"""Running a batch job's files: each one processed, then recorded as it finishes.

:func:`run_file` is the unit every runner shares — the Prefect task of the
``batch-process`` flow (a chunk of files per task run) and :func:`run_job`, which
runs a whole stored job in this process on a thread pool, without Prefect: what a
detached ``galleryflow batch`` job (``galleryflow.app.batch_worker``) runs, in well
under a second of start-up.

Before each file a worker reads the job's stop reason from the DB (so a worker in
another thread, process or machine sees it; read in the transaction that recorded the
worker's previous file, which ended just before) and checks the free disk; a fault of the
output folder (:class:`~galleryflow.batch.outputs.OutputError`: disk full, read-only,
no permission, not a folder) stops the job with that reason. The file in hand and
every file after it are recorded ``not processed``; nothing partial is left (writes
are atomic).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from galleryflow.batch import jobs
from galleryflow.batch.ops import FileResult, JobSpec, estimate_output_bytes, process_file
from galleryflow.batch.outputs import OutputError, OutputRegistry, iter_inputs
from galleryflow.core.fsutil import free_bytes
from galleryflow.imaging import media


def disk_short(spec: JobSpec, probe: media.Probe | None) -> str | None:
    """Free space is checked again as the job runs: other programs write too. ``probe``:
    the file's headers (None when unreadable: the file's own fault, which process_file
    reports; it then needs no room)."""
    out = Path(spec.output_directory)
    free = free_bytes(out)
    try:
        need = estimate_output_bytes(probe, spec.operation, spec.params) if probe else 0
    except Exception:
        need = 0  # process_file will report this file's own fault
    if free < need + spec.disk_headroom_bytes:
        return (f"Disk full: {free / 1e6:.0f} MB free on {out}, below the "
                f"{spec.disk_headroom_bytes / 1e6:.0f} MB kept free; the job stopped")
    return None


# The job's stop reason as read by this thread's last record of a file (a transaction that
# ended just before its next file starts): that file's check needs no transaction of its
# own. Taken once, and only while fresh (a thread may wait for the glob between files); a
# thread's first file, or one after a record that failed, reads it itself.
_last_read = threading.local()
FRESH_SECONDS = 0.1


def _stop_reason(job_id: str) -> str | None:
    known = getattr(_last_read, "value", None)
    _last_read.value = None
    if known is not None and known[0] == job_id and time.monotonic() - known[1] < FRESH_SECONDS:
        return known[2]
    return jobs.stop_reason(job_id)


def _probe(path: Path) -> media.Probe | None:
    try:
        return media.probe(path)
    except Exception:  # noqa: BLE001 - process_file meets (and reports) it itself
        return None


def run_file(path: Path, spec: JobSpec, registry: OutputRegistry) -> FileResult:
    """Process one file unless the job is stopping, and record its outcome."""
    reason = _stop_reason(spec.job_id)
    probe = None
    if reason is None and spec.disk_headroom_bytes > 0:
        probe = _probe(path)
        short = disk_short(spec, probe)
        if short:
            reason = jobs.stop_job(spec.job_id, short)
    if reason is not None:
        result = jobs.not_processed(str(path), reason)
    else:
        try:
            result = process_file(path, spec, registry, probe=probe)
        except OutputError as exc:
            result = jobs.not_processed(str(path), jobs.stop_job(spec.job_id, str(exc)))
    reason_now = jobs.record_file(spec.job_id, result)
    _last_read.value = (spec.job_id, time.monotonic(), reason_now)
    return result


def run_files(files: list[str], spec: JobSpec) -> dict[str, int]:
    """A chunk of files, one after another (a Prefect task's work); counts by outcome."""
    registry = OutputRegistry(Path(spec.output_directory))
    outcome: dict[str, int] = {}
    for name in files:
        status = run_file(Path(name), spec, registry).status
        outcome[status] = outcome.get(status, 0) + 1
    return outcome


def chunks(paths: Iterator[Path], size: int) -> Iterator[list[str]]:
    while chunk := [str(p) for p in itertools.islice(paths, size)]:
        yield chunk


def _run_and_tell(path: Path, spec: JobSpec, registry: OutputRegistry,
                  on_file: Callable[[FileResult], None] | None) -> FileResult:
    result = run_file(path, spec, registry)
    if on_file is not None:
        on_file(result)
    return result


def run_job(job_id: str, workers: int | None = None,
            on_file: Callable[[FileResult], None] | None = None,
            recorded: tuple[JobSpec, str] | None = None) -> str:
    """Run a stored job here, ``workers`` files at a time (threads: Pillow releases the
    GIL); returns its final status. The glob is streamed, never listed, and at most
    two files per worker are queued, so memory stays bounded however many match.
    ``on_file`` is called (in the worker thread) with each result once it is recorded.
    ``recorded``: the spec and glob of a job this process has just recorded as running
    with itself as the owner (the forked CLI worker), not read back from the DB."""
    if recorded is None:
        spec, pattern, record = jobs.load_spec(job_id)
        jobs.mark_running(job_id)
        workers = workers or record.workers
    else:
        spec, pattern = recorded
    workers = max(1, workers or 1)
    out = Path(spec.output_directory)
    registry = OutputRegistry(out)
    seen = 0
    pending: deque[Future[FileResult]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix=f"batch-{job_id[:8]}") as pool:
        for path in iter_inputs(pattern, exclude=out):
            seen += 1
            pending.append(pool.submit(_run_and_tell, path, spec, registry, on_file))
            if len(pending) >= 2 * workers:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    return jobs.finish(job_id, seen)
