"""Helpers for tests against a real Prefect server: deployments, runs, a real worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterTags,
)

INTAKE_DEPLOYMENTS = ("process-sets/nightly", "process-sets/urgent")


def galleryflow_deployments(client: Any) -> list[Any]:
    return client.read_deployments(
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["galleryflow"])))


def runs_of(client: Any, deployment_id: Any) -> list[Any]:
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


@contextmanager
def paused_deployments() -> Iterator[None]:
    """Pause galleryflow's deployments (their auto-scheduled runs go) and remove runs
    left by earlier tests, so a worker sees only the runs a test creates."""
    with get_client(sync_client=True) as client:
        deployments = galleryflow_deployments(client)
        for d in deployments:
            client.pause_deployment(d.id)
            for run in runs_of(client, d.id):
                if not run.state or not run.state.is_final():
                    client.delete_flow_run(run.id)
    try:
        yield
    finally:
        with get_client(sync_client=True) as client:
            for d in deployments:
                for run in runs_of(client, d.id):
                    if not run.state or not run.state.is_final():
                        client.delete_flow_run(run.id)
                client.resume_deployment(d.id)


@contextmanager
def worker(pool: str, env: dict[str, str], log_path: Path, limit: int = 1) -> Iterator[subprocess.Popen]:
    """A real `prefect worker start` process, stopped (its whole group) afterwards."""
    prefect = Path(sys.executable).with_name("prefect")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(prefect), "worker", "start", "--pool", pool, "--type", "process",
             "--limit", str(limit)],
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def wait_final(client: Any, run_ids: list[Any], timeout: float) -> list[Any]:
    """Poll until every run is in a final state (or the time is up); return the runs."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [client.read_flow_run(i) for i in run_ids]
        if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(1)
