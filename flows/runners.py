"""The task runner a flow runs with, chosen by ``settings.task_runner``, and the
flows as deployed: with that runner and galleryflow's hooks attached.

- ``threads`` (default): Prefect's ``ThreadPoolTaskRunner``. Chunk tasks run on
  threads of the flow-run process; Pillow releases the GIL, so one machine's
  cores are used without any extra service.
- ``dask``: prefect-dask's ``DaskTaskRunner``. Chunk tasks run on Dask workers:
  a local cluster (``ops.dask_workers`` processes) or an existing scheduler
  (``ops.dask_address``, e.g. ``tcp://10.0.0.5:8786``) whose workers on other
  machines see the same ``GALLERYFLOW_HOME`` and database.

``prefect.yaml`` points the process-sets deployments at :data:`process_sets`
here, so a worker applies the settings of the machine it runs on.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import Flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.process_sets import process_sets as process_sets_flow
from flows.review_publish import review_publish as review_publish_flow
from galleryflow.core.settings import Settings, get_settings
from galleryflow.intake.queue import release_claims
from galleryflow.notifications import notify_completion, notify_failure


class TaskRunnerUnavailable(RuntimeError):
    """The configured task runner cannot be built (e.g. prefect-dask not installed)."""


def build_task_runner(settings: Settings | None = None) -> TaskRunner:
    settings = settings or get_settings()
    if settings.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise TaskRunnerUnavailable(
                "task_runner = 'dask' needs prefect-dask: pip install 'galleryflow[dask]'"
            ) from exc
        ops = settings.ops
        if ops.dask_address:
            return DaskTaskRunner(address=ops.dask_address)
        workers = ops.dask_workers or (os.cpu_count() or 1)
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": workers,
            "processes": ops.dask_processes,
            # Chunk tasks run their own Pillow threads: one Dask thread per worker.
            "threads_per_worker": 1,
            "dashboard_address": ":0",  # any free port: runs on one machine never collide
        })
    return ThreadPoolTaskRunner(max_workers=4)


def _hooks(existing: list[Any], *extra: Any) -> list[Any]:
    """``existing`` plus ``extra``, without adding a hook twice."""
    return [*existing, *(h for h in extra if h not in existing)]


def deployable(flow: Flow, settings: Settings | None = None,
               release_claims_on_failure: bool = False) -> Flow:
    """``flow`` with the configured task runner and the notification hooks.

    ``release_claims_on_failure``: for flows that claim intake sets, a failed,
    crashed or cancelled run gives back the sets it did not complete.
    """
    release = [release_failed_claims] if release_claims_on_failure else []
    return flow.with_options(
        task_runner=build_task_runner(settings),
        on_completion=_hooks(flow.on_completion_hooks, notify_completion),
        on_failure=_hooks(flow.on_failure_hooks, *release, notify_failure),
        on_crashed=_hooks(flow.on_crashed_hooks, *release, notify_failure),
        on_cancellation=_hooks(flow.on_cancellation_hooks, *release),
    )


def release_failed_claims(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook: the sets this run did not complete go back to the intake queue."""
    log = logging.getLogger(__name__)
    try:
        released = release_claims(str(flow_run.id))
    except Exception as exc:  # a hook must not hide the run's own failure
        log.warning("could not release the intake claims of run %s: %s", flow_run.id, exc)
        return
    if released:
        log.warning("run %s did not complete %d set(s); they go back to the intake queue: %s",
                    flow_run.id, len(released), ", ".join(released))




# The deployed flows (prefect.yaml's entrypoints) and the CLI's.
process_sets = deployable(process_sets_flow, release_claims_on_failure=True)
review_publish = deployable(review_publish_flow)
