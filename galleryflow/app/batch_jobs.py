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

The command line (``galleryflow batch process``, through :func:`launch` with
``fork=True``) gets the same detached worker without a second Python start-up:
the process that checked and recorded the job forks, and the child — a new
session, no terminal, stdin from ``/dev/null``, its output to the job's log file —
runs the job (:func:`galleryflow.app.batch_worker.run`) while the parent follows
it through a pipe (a byte per finished file; end of file when the child exits)
and prints the report. Killing the parent (its terminal closing, SIGKILL of its
process group) leaves the child running: it is in a session of its own. A fork
happens only where it is safe: a POSIX system other than macOS, and no thread in
the calling process (the MCP server, a test harness with a server in a thread:
those spawn the worker instead). No DB connection crosses the fork (the engines
are disposed first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import galleryflow
from galleryflow.batch import jobs
from galleryflow.batch.preflight import JobRefused, prepare
from galleryflow.batch.presets import BatchRequest
from galleryflow.core.liveness import owner_of
from galleryflow.core.prefect_env import API_URL, active_profile_settings
from galleryflow.core.settings import Settings, get_settings
from galleryflow.db.engine import dispose_engines, is_up_to_date, migrate

__all__ = ["JobRefused", "Started", "launch", "start_job", "log_path"]

_children: dict[str, subprocess.Popen[bytes]] = {}


def log_path(settings: Settings, job_id: str) -> Path:
    return settings.logs_dir / f"batch-{job_id}.log"


@dataclass
class Started:
    """A job that is recorded and running somewhere that does not depend on the caller."""

    job_id: str
    total: int  # files counted by the check (the job may meet more or fewer)
    pid: int | None = None  # the forked worker, a child of this process
    events: int | None = None  # read end of its pipe: a byte per finished file

    def finished_files(self) -> Iterator[int]:
        """Files finished, one at a time as the forked worker reports them, until it
        exits (then the pipe ends). Nothing when the worker was not forked here."""
        if self.events is None:
            return
        try:
            while chunk := os.read(self.events, 4096):
                for _ in range(chunk.count(b"f")):
                    yield 1
        finally:
            os.close(self.events)
            self.events = None

    def reap(self) -> int | None:
        """Wait for the forked worker to exit; its exit status (None: not ours)."""
        if self.pid is None:
            return None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)


def start_job(request: BatchRequest, settings: Settings | None = None) -> str:
    """Check, record and start a job; returns its id once it is recorded and running
    somewhere that does not depend on this process. Raises ``JobRefused``."""
    return launch(request, settings).job_id


def launch(request: BatchRequest, settings: Settings | None = None, *,
           fork: bool = False) -> Started:
    """:func:`start_job`, with what a caller that follows the job needs. ``fork``: run
    a local job in a forked child of this process when that is safe (see the module's
    docstring), else in a spawned worker."""
    settings = settings or get_settings()
    if not is_up_to_date(settings.db_url):
        migrate(settings.db_url)
    prepared = prepare(request, settings)
    job_id = str(uuid.uuid4())
    jobs.create_prepared(job_id, request, prepared, settings, status="pending")
    started = Started(job_id, prepared.total)
    try:
        if _use_deployment(settings):
            _run_deployment(settings, job_id)
        elif fork and can_fork():
            started.pid, started.events = _fork_worker(settings, job_id)
        else:
            _launch_worker(settings, job_id)
    except Exception as exc:
        jobs.fail_job(job_id, f"could not start the job: {exc}")
        raise JobRefused(f"could not start the job: {exc}") from None
    return started


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


# ---------------------------------------------------------------- a forked process

def can_fork() -> bool:
    """Whether this process may fork a worker: POSIX (not macOS, whose system
    libraries do not survive a fork without exec) and no other thread, which a
    fork would leave behind in the child holding whatever lock it held."""
    return (hasattr(os, "fork") and sys.platform != "darwin"
            and threading.active_count() == 1)


def _fork_worker(settings: Settings, job_id: str) -> tuple[int, int]:
    """Fork the job's worker; (its pid, the read end of its progress pipe)."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path(settings, job_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    read_end, write_end = os.pipe()
    dispose_engines()  # no pooled DB connection may be shared with the child
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # or the child would print the parent's pending output again
        except (OSError, ValueError):
            pass
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        code = 1
        try:
            os.close(read_end)
            os.setsid()  # not in the caller's session or process group: its end is not ours
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(devnull)
            os.close(log)
            code = _run_forked(job_id, write_end)
        except BaseException:  # noqa: BLE001 - the log has it; the job's record says crashed
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)  # nothing of the parent's (atexit, typer) runs twice
    os.close(write_end)
    os.close(log)
    try:
        jobs.set_owner(job_id, owner_of(pid))
    except Exception:  # noqa: BLE001 - the child records itself as it starts
        pass
    return pid, read_end


def _run_forked(job_id: str, write_end: int) -> int:
    import logging

    from galleryflow.app.batch_worker import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Never blocks the job: a parent that stops reading (suspended, gone) only loses
    # the progress it would have shown; the job's record has it all.
    os.set_blocking(write_end, False)
    lock = threading.Lock()
    open_ = [True]

    def tell(_result: object) -> None:
        with lock:
            if not open_[0]:
                return
            try:
                os.write(write_end, b"f")
            except BlockingIOError:
                pass
            except OSError:  # the parent is gone (EPIPE): nobody to tell
                open_[0] = False

    return run(job_id, on_file=tell)


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
