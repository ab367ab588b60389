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
once the job is checked, the CLI process forks, and the child — a new session,
no terminal, stdin from ``/dev/null``, its output to the job's log file — records
the job and runs it (:func:`galleryflow.app.batch_worker.run`), while the parent
follows it through a pipe (a line per finished file, then the job's report) and
prints the report. The parent never imports the DB layer (SQLAlchemy: the
largest import of the command); the child imports it while its first images are
already being decoded (:class:`galleryflow.batch.ops.Prefetch`: decoding only,
nothing is written before the job is recorded). Killing the parent (its terminal
closing, SIGKILL of its process group) leaves the child running: it is in a
session of its own. A fork happens only where it is safe: a POSIX system other
than macOS, and no other thread in the calling process (the MCP server, a test
harness with a server in a thread: those spawn the worker instead). The parent
holds no DB connection when it forks.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import galleryflow
from galleryflow.batch.preflight import JobRefused, Prepared, prepare
from galleryflow.batch.presets import BatchRequest
from galleryflow.core.prefect_env import API_URL, active_profile_settings
from galleryflow.core.settings import Settings, get_settings

# The DB layer (galleryflow.batch.jobs, galleryflow.db) and psutil (core.liveness) are
# imported where they are used: the CLI's side of a forked job never needs them.

__all__ = ["JobRefused", "Started", "launch", "start_job", "log_path"]

_children: dict[str, subprocess.Popen[bytes]] = {}


def log_path(settings: Settings, job_id: str) -> Path:
    return settings.logs_dir / f"batch-{job_id}.log"


@dataclass
class Started:
    """A job that is recorded and running somewhere that does not depend on the caller
    (a forked worker: recorded by the child, see :meth:`events`)."""

    job_id: str
    total: int  # files counted by the check (the job may meet more or fewer)
    pid: int | None = None  # the forked worker, a child of this process
    pipe: int | None = None  # read end of its pipe

    def events(self) -> Iterator[tuple[str, str]]:
        """What the forked worker tells, as it happens, until it exits: ``("R", "")``
        the job is recorded; ``("f", "")`` a file finished; ``("X", reason)`` the job
        could not be recorded (nothing was written); ``("E", report)`` the job ended
        (the report as JSON). Nothing when the worker was not forked here."""
        if self.pipe is None:
            return
        buffer = bytearray()
        try:
            while chunk := os.read(self.pipe, 1 << 16):
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end]).decode("utf-8", "replace")
                    del buffer[:end + 1]
                    if line:
                        yield line[:1], line[2:]
        finally:
            os.close(self.pipe)
            self.pipe = None

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
    # Asked first: asking a Prefect server about the deployment may start threads.
    deploy = _use_deployment(settings) if fork else None
    if fork and not deploy and can_fork():
        prepared = prepare(request, settings)
        job_id = str(uuid.uuid4())
        try:
            pid, pipe = _fork_worker(settings, job_id, request, prepared)
        except OSError as exc:  # nothing recorded yet, nothing written
            raise JobRefused(f"could not start the job: {exc}") from None
        return Started(job_id, prepared.total, pid, pipe)

    from galleryflow.batch import jobs
    from galleryflow.db.engine import is_up_to_date, migrate

    if not is_up_to_date(settings.db_url):
        migrate(settings.db_url)
    prepared = prepare(request, settings)
    job_id = str(uuid.uuid4())
    jobs.create_prepared(job_id, request, prepared, settings, status="pending")
    try:
        if deploy if deploy is not None else _use_deployment(settings):
            _run_deployment(settings, job_id)
        else:
            _launch_worker(settings, job_id)
    except Exception as exc:
        jobs.fail_job(job_id, f"could not start the job: {exc}")
        raise JobRefused(f"could not start the job: {exc}") from None
    return Started(job_id, prepared.total)


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
        from galleryflow.batch import jobs
        from galleryflow.core.liveness import owner_of

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


def _fork_worker(settings: Settings, job_id: str, request: BatchRequest,
                 prepared: Prepared) -> tuple[int, int]:
    """Fork the job's worker; (its pid, the read end of its pipe)."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path(settings, job_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    read_end, write_end = os.pipe()
    if "galleryflow.db.engine" in sys.modules:  # no pooled DB connection may be shared
        from galleryflow.db.engine import dispose_engines

        dispose_engines()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # or the child would print the parent's pending output again
        except (OSError, ValueError):
            pass
    try:
        pid = os.fork()
    except OSError:
        for fd in (log, read_end, write_end):
            os.close(fd)
        raise
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
            code = _run_forked(settings, job_id, request, prepared, _Pipe(write_end))
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
    return pid, read_end


class _Pipe:
    """The forked worker's side of the pipe. A file's line never blocks the job: a
    parent that stops reading (suspended, gone) only misses progress the job's record
    has anyway. A final line waits for the parent a while (10 s), then gives up."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.open = True
        self.lock = threading.Lock()
        os.set_blocking(fd, False)

    def file(self, _result: object = None) -> None:
        self.send(b"f\n", wait=0.0)

    def line(self, kind: str, text: str = "") -> None:
        self.send(f"{kind} {text}".encode("utf-8") + b"\n", wait=10.0)

    def send(self, data: bytes, wait: float) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + wait
        with self.lock:
            while self.open and view:
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if len(view) < len(data):  # a torn line: say nothing more
                            self.open = False
                        return
                    select.select([], [self.fd], [], left)
                except OSError:  # the parent is gone (EPIPE): nobody to tell
                    self.open = False


REPORT_FILES = 50  # files with something to say that the report lists


def report(job: Any, limit: int = REPORT_FILES) -> dict[str, Any]:
    """A finished job as its report shows it: the summary, and the files with an error
    or a note (failures first), at most ``limit`` of them."""
    data = job.model_dump(mode="json")
    worth = [f for f in data.pop("files", None) or [] if f.get("error") or f.get("note")]
    data["files"], data["more_files"] = worth[:limit], len(worth) > limit
    return data


def _run_forked(settings: Settings, job_id: str, request: BatchRequest, prepared: Prepared,
                pipe: _Pipe) -> int:
    """The forked worker: record the job (decoding its first images meanwhile), run it,
    tell the parent its report; the exit status of ``batch_worker``."""
    import logging

    from galleryflow.batch.ops import JobSpec, prefetch
    from galleryflow.batch.outputs import iter_inputs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    workers = settings.batch.workers or os.cpu_count() or 1
    spec = JobSpec(job_id=job_id, operation=prepared.job.operation, params=prepared.job.params,
                   base_dir=str(prepared.base_dir),
                   output_directory=str(prepared.output_directory),
                   disk_headroom_bytes=settings.batch.disk_headroom_bytes,
                   max_pixels=settings.validation.max_pixels)
    ahead = prefetch(iter_inputs(prepared.input_pattern, exclude=prepared.output_directory),
                     spec, workers, limit=4 * workers)
    try:
        from galleryflow.batch import jobs
        from galleryflow.core.liveness import current_owner
        from galleryflow.db.engine import is_up_to_date, migrate

        if not is_up_to_date(settings.db_url):
            migrate(settings.db_url)
        # Recorded running, this process its owner: the job is run from what is here,
        # never read back (galleryflow.batch.runner.run_job's ``recorded``).
        jobs.create_prepared(job_id, request, prepared, settings, status="running",
                             owner=current_owner())
    except Exception as exc:  # noqa: BLE001 - told to the parent; nothing was written
        ahead.clear()
        traceback.print_exc()
        pipe.line("X", f"could not start the job: {exc}".replace("\n", " "))
        return 2
    pipe.line("R")
    ahead.stop()  # the job's threads decode the rest
    from galleryflow.app.batch_worker import run

    try:
        code = run(job_id, on_file=pipe.file,
                   recorded=(spec, prepared.input_pattern, workers))
    finally:
        ahead.clear()
    try:
        from galleryflow.batch.status import get_job

        pipe.line("E", json.dumps(report(get_job(job_id))))
    except Exception:  # noqa: BLE001 - the parent reads the job's record instead
        traceback.print_exc()
    return code


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
