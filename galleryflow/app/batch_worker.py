"""``python -m galleryflow.app.batch_worker JOB_ID``: run one recorded batch job to its end.

Started detached by :mod:`galleryflow.app.batch_jobs` (its own session, no terminal,
output to the job's log file). It runs the job with
:func:`galleryflow.batch.runner.run_job` — threads, no Prefect, so nothing else is
started and nothing is left behind when it dies — and records every file as it
finishes. SIGTERM or SIGINT (a shutdown, ``kill PID``) stops it like a full disk
does: the file in hand finishes, the job ends ``failed`` with the signal as its
reason and the rest ``not processed``. An unexpected fault ends the job ``failed``
with a one-line reason; the traceback goes to the log file only. Exit status: 0
completed, 3 partial, 1 failed.

:func:`run` is the same work for a worker forked by the CLI
(:mod:`galleryflow.app.batch_jobs`), which has everything imported already.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable

from galleryflow.batch import jobs
from galleryflow.batch.ops import FileResult, JobSpec
from galleryflow.batch.runner import run_job
from galleryflow.core.memory import reuse_freed_memory

EXIT_CODES = {"completed": 0, "partial": 3}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m galleryflow.app.batch_worker JOB_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    reuse_freed_memory()
    return run(args[0])


def run(job_id: str, on_file: Callable[[FileResult], None] | None = None,
        recorded: tuple[JobSpec, str, int] | None = None) -> int:
    """Run the recorded job ``job_id`` to its end in this process; its exit status.
    ``on_file``: told of each file once it is recorded (a forked worker's progress).
    ``recorded``: the spec, glob and workers of the job as this process has just
    recorded it, running and owned by this process (the forked worker: no read back)."""

    def stop(signum: int, _frame: object) -> None:
        # The stop is a DB write: done off the signal handler, which may have
        # interrupted this thread inside a DB call.
        reason = f"stopped: the worker process received {signal.Signals(signum).name}"
        threading.Thread(target=jobs.stop_job, args=(job_id, reason), daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        if recorded is None:
            status = run_job(job_id, on_file=on_file)
        else:
            spec, pattern, workers = recorded
            status = run_job(job_id, workers, on_file=on_file, recorded=(spec, pattern))
    except Exception as exc:  # noqa: BLE001 - recorded in words; the traceback is logged
        traceback.print_exc()
        try:
            jobs.fail_job(job_id, f"stopped by an internal error: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - the DB itself is gone: the log has it
            traceback.print_exc()
        return 1
    logging.info("batch job %s: %s", job_id, status)
    return EXIT_CODES.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
