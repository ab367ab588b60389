"""prefect.yaml as galleryflow reads it (setup and serve share it)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from galleryflow.app.deployments import fill_placeholders, load_project, served_deployments
from galleryflow.core.settings import Settings


def test_prefect_yaml_declares_every_deployment(gf_home: Settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(gf_home.ops, "timezone", "Europe/Zurich")
    project = load_project(gf_home)
    assert [d.full_name for d in project.deployments] == [
        "process-sets/nightly", "process-sets/urgent", "review-publish/on-demand",
        "batch-process/on-demand", "cleanup/weekly", "daily-report/daily"]
    nightly = project.get("process-sets/nightly")
    assert (nightly.parameters, nightly.work_queue) == ({"intake_dir": "queue"}, "default")
    assert (nightly.schedules[0].cron, nightly.schedules[0].timezone) == ("0 2 * * *", "Europe/Zurich")
    urgent = project.get("process-sets/urgent")
    assert (urgent.work_queue, urgent.schedules[0].interval) == ("urgent", 900)
    assert project.work_pool.queues == {"urgent": 1, "default": 2}
    assert project.concurrency_limits == {"ollama": 1, "scoring": 1, "publish": 4}
    # Deployments whose flow is not in this checkout yet are known and skipped.
    assert {d.full_name for d in project.missing()} == {
        d.full_name for d in project.deployments if not (project.root / d.entry_file).exists()}


def test_an_unset_placeholder_is_a_clear_error():
    with pytest.raises(KeyError, match="GALLERYFLOW_NO_SUCH"):
        fill_placeholders({"a": ["{{ $GALLERYFLOW_NO_SUCH }}"]}, {})
    assert fill_placeholders("x-{{ $A }}-y", {"A": "1"}) == "x-1-y"


def test_served_deployments_match_prefect_yaml(gf_home: Settings, monkeypatch: pytest.MonkeyPatch):
    project = load_project(gf_home)
    monkeypatch.chdir(project.root)
    served = {d.name + ":" + d.entrypoint: d for d in served_deployments(project)}
    urgent = served["urgent:flows/runners.py:process_sets"]
    assert urgent.parameters == {"intake_dir": "urgent"}
    assert urgent.schedules[0].schedule.interval == timedelta(minutes=15)
    assert "weekly:flows/cleanup.py:cleanup" in served and "daily:flows/daily_report.py:daily_report" in served
