"""The ``batch-chunk`` task: a chunk of a batch job's files (a task run costs ~12 ms, so
never one per file), each recorded in the DB as it finishes.

A thin wrapper: the work is :func:`galleryflow.batch.runner.run_files`. Everything
the chunks of one job share (progress, the stop signal) is in the job's DB row, so
chunks on a Dask worker in another process or machine see it too.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from galleryflow.batch.ops import JobSpec
from galleryflow.batch.runner import run_files


# No retries: each file is recorded as it finishes, so a retried chunk would record
# its finished files twice; a transient fault is retried per file (ops._retry_io).
@task(name="batch-chunk", tags=["galleryflow-batch"], cache_policy=NO_CACHE,
      persist_result=False)
def process_chunk(files: list[str], spec: JobSpec) -> dict[str, int]:
    """Process a chunk of files and record each one's outcome; counts by outcome.

    Not cached by Prefect: it writes. Reruns skip finished outputs through the
    output registry's content+parameter keys instead (galleryflow.batch.outputs).
    """
    return run_files(files, spec)
