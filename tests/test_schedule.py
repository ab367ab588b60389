"""The pinned Prefect stack really schedules: a deployment's schedule creates runs.

On this registry a plain ``pip install prefect`` once resolved to a fastapi its
server could not import and to SQLAlchemy 2.1, under which the health check
passed but the scheduler never created a run. pyproject pins what works; this
test is the proof, against a real ``prefect server start``.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.schedules import IntervalSchedule

pytestmark = pytest.mark.integration


def test_a_schedule_fires(prefect_server_api: str):
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("gf-schedule-probe")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name="every-minute",
            schedules=[DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(minutes=1)),
                                                active=True)],
            paused=False,
        )
        runs = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not runs:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            time.sleep(1)
    assert runs, "the scheduler created no run for an active interval schedule within 90 s"
    assert all(run.state.name == "Scheduled" for run in runs)
    starts = sorted(run.expected_start_time for run in runs)
    assert len(starts) >= 3  # min_runs: the scheduler plans ahead
    assert starts[1] - starts[0] == timedelta(minutes=1)
