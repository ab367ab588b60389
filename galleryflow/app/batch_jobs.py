"""Starting batch jobs that outlive whoever started them (the CLI, the MCP server).

:func:`start_job` checks the request completely first
(:func:`galleryflow.batch.preflight.prepare`: a refusal raises
:class:`~galleryflow.batch.preflight.JobRefused` and leaves nothing behind), records
the job, and hands it to a runner that does not depend on the caller:

- **a Prefect deployment** (``batch.deployment``) run on a worker, when a Prefect
  server is configured and has that deployment with a worker online (or when
  ``batch.runner`` says ``deployment``): the job is a ``batch-process`` flow run
  there, visible in the Prefect UI;
- otherwise **a detached process** on this machine (``python -m
  galleryflow.app.batch_worker JOB_ID``, a new session, no terminal, its output in
  ``GALLERYFLOW_HOME/logs/batch-<id>.log``): closing the MCP client or the terminal
  leaves it running. It starts no Prefect server — it runs the job on a thread pool
  and records the job, every file and the progress in galleryflow's DB, which is
  what ``batch status`` and the MCP tools read — so a one-off job starts in well
  under a second. Its owner (``host:pid:start``) is recorded at once: a killed
  worker is seen as ``crashed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import galleryflow
from galleryflow.batch import jobs
from galleryflow.batch.preflight import JobRefused, prepare
from galleryflow.batch.presets import BatchRequest
from galleryflow.core.liveness import owner_of
from galleryflow.core.prefect_env import API_URL, active_profile_settings
from galleryflow.core.settings import Settings, get_settings
from galleryflow.db.engine import is_up_to_date, migrate

__all__ = ["JobRefused", "start_job", "log_path"]

_children: dict[str, subprocess.Popen[bytes]] = {}


def log_path(settings: Settings, job_id: str) -> Path:
    return settings.logs_dir / f"batch-{job_id}.log"


def start_job(request: BatchRequest, settings: Settings | None = None) -> str:
    """Check, record and start a job; returns its id once it is recorded and running
    somewhere that does not depend on this process. Raises ``JobRefused``."""
    settings = settings or get_settings()
    if not is_up_to_date(settings.db_url):
        migrate(settings.db_url)
    prepared = prepare(request, settings)
    job_id = str(uuid.uuid4())
    jobs.create_prepared(job_id, request, prepared, settings, status="pending")
    try:
        if _use_deployment(settings):
            _run_deployment(settings, job_id)
        else:
            _launch_worker(settings, job_id)
    except Exception as exc:
        jobs.fail_job(job_id, f"could not start the job: {exc}")
        raise JobRefused(f"could not start the job: {exc}") from None
    return job_id


# ---------------------------------------------------------------- a detached process

def _launch_worker(settings: Settings, job_id: str) -> None:
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    # The child runs this very code and DB, whatever its own environment would pick.
    source_root = str(Path(galleryflow.__file__).resolve().parents[1])
    env = {**os.environ, "GALLERYFLOW_HOME": str(settings.home),
           "GALLERYFLOW_DATABASE_URL": settings.db_url,
           "PYTHONPATH": os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH"))
                                         if p)}
    with open(log_path(settings, job_id), "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "galleryflow.app.batch_worker", job_id],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # not in the caller's process group: its end is not ours
            close_fds=True)
    try:
        jobs.set_owner(job_id, owner_of(child.pid))
    except Exception:  # noqa: BLE001 - the child records itself as it starts
        pass
    _children[job_id] = child
    # Reap it when it ends, so a finished worker never lingers as a zombie of a
    # long-lived caller (the MCP server).
    threading.Thread(target=child.wait, name=f"reap-{job_id[:8]}", daemon=True).start()


def wait_for_job(job_id: str, timeout: float | None = None) -> bool:
    """Wait for a worker this process started; False if it still runs after ``timeout``."""
    child = _children.get(job_id)
    if child is None:
        return True
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


# ---------------------------------------------------------------- a Prefect deployment

def _api_url() -> str | None:
    return os.environ.get(API_URL) or active_profile_settings().get(API_URL) or None


def _use_deployment(settings: Settings) -> bool:
    mode = settings.batch.runner
    if mode == "local":
        return False
    if mode == "deployment":
        return True
    return _api_url() is not None and _deployment_has_worker(settings.batch.deployment)


def _deployment_has_worker(name: str) -> bool:
    """Whether the configured server has the deployment and a worker online for its pool.

    Prefect is imported only here, when a server is configured (start-up cost)."""
    from prefect import get_client
    from prefect.client.schemas.objects import WorkerStatus

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            if not deployment.work_pool_name:
                return False
            workers = client.read_workers_for_work_pool(deployment.work_pool_name)
            return any(w.status == WorkerStatus.ONLINE for w in workers)
    except Exception:  # noqa: BLE001 - no such deployment, server unreachable: run locally
        return False


def _run_deployment(settings: Settings, job_id: str) -> None:
    from prefect.deployments import run_deployment

    run_deployment(settings.batch.deployment, parameters={"job_id": job_id}, timeout=0)
