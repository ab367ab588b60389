"""galleryflow on a real Prefect server: setup, deployments and schedules, queue
priority with a real worker, and the watch service (exactly one run per set)."""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled
from prefect.types._datetime import now as prefect_now

from galleryflow.app.deployments import load_project, local_timezone
from galleryflow.intake.queue import claim, content_digest, inspect_folder
from galleryflow.app.setup import SetupReport, run_setup
from galleryflow.core.settings import Settings
from galleryflow.app.watch import WatchService, deployment_run_starter
from tests.fixtures.photos import make_set
from tests.services.prefect_ops import galleryflow_deployments, paused_deployments, runs_of, wait_final, worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployed(prefect_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> SetupReport:
    """`galleryflow setup` once for this module's tests."""
    with temporary_settings({PREFECT_API_URL: prefect_server_url}):
        return run_setup(Settings(home=tmp_path_factory.mktemp("setup-home")), echo=lambda _: None)


def _server_state() -> dict[str, Any]:
    """What setup controls, as plain data (to compare two setups)."""
    with get_client(sync_client=True) as client:
        deployments = {}
        for d in galleryflow_deployments(client):
            flow = client.read_flow(d.flow_id)
            scheduled = [r for r in runs_of(client, d.id) if r.state and r.state.name == "Scheduled"]
            deployments[f"{flow.name}/{d.name}"] = {
                "id": d.id, "pool": d.work_pool_name, "queue": d.work_queue_name,
                "parameters": d.parameters, "pull_steps": d.pull_steps, "entrypoint": d.entrypoint,
                "schedules": sorted((s.slug, repr(s.schedule), s.active) for s in d.schedules),
                "scheduled_runs": len(scheduled),
            }
        queues = {q.name: q.priority for q in client.read_work_queues(work_pool_name="galleryflow")}
        limits = {n: client.read_global_concurrency_limit_by_name(n).limit
                  for n in ("ollama", "scoring", "publish")}
        pool = client.read_work_pool("galleryflow")
        block_type = client.read_block_type_by_slug("galleryflow-notification-webhook")
    return {"deployments": deployments, "queues": queues, "limits": limits, "pool_type": pool.type,
            "block_type": block_type.name}


def _settled_state(timeout: float = 60) -> dict[str, Any]:
    """The server state once the scheduler (a 1 s loop) has planned the schedules' runs:
    two readings in a row alike. A fixed wait read a half-planned state under load."""
    deadline = time.monotonic() + timeout
    state = _server_state()
    while True:
        time.sleep(1.5)
        again = _server_state()
        if again == state or time.monotonic() > deadline:
            return again
        state = again


def test_setup_twice_is_harmless(deployed: SetupReport, prefect_server_api: str, gf_home: Settings):
    before = _settled_state()
    again = run_setup(gf_home, echo=lambda _: None)
    after = _settled_state()
    assert again.actions == []  # nothing to create or correct the second time
    assert again.deployed == deployed.deployed
    assert after == before  # same deployments (same ids), schedules, queued runs, queues, limits


def test_deployments_exist_with_schedules_and_queues(deployed: SetupReport, prefect_server_api: str,
                                                     gf_home: Settings):
    project = load_project(gf_home)
    state = _server_state()
    deployments = state["deployments"]
    expected = {s.full_name for s in project.available()}
    assert set(deployed.deployed) == expected <= set(deployments)
    assert {s.split(":")[0] for s in deployed.skipped} == {s.full_name for s in project.missing()}
    tz = local_timezone()
    nightly, urgent = deployments["process-sets/nightly"], deployments["process-sets/urgent"]
    assert (nightly["queue"], nightly["parameters"]) == ("default", {"intake_dir": "queue"})
    assert (urgent["queue"], urgent["parameters"]) == ("urgent", {"intake_dir": "urgent"})
    assert nightly["schedules"] == [("nightly-0200", repr(_cron("0 2 * * *", tz)), True)]
    (slug, schedule, active), = urgent["schedules"]
    assert slug == "every-15-minutes" and active and "seconds=900" in schedule
    assert deployments["cleanup/weekly"]["schedules"][0][1] == repr(_cron("0 3 * * 0", tz))
    assert deployments["daily-report/daily"]["schedules"][0][1] == repr(_cron("0 7 * * *", tz))
    for d in deployments.values():
        assert d["pool"] == "galleryflow"
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                    {"directory": str(project.root)}}]
    assert state["queues"]["urgent"] < state["queues"]["default"]  # lower number: served first
    assert state["limits"] == {"ollama": 1, "scoring": 1, "publish": 4}
    assert state["pool_type"] == "process"


def _cron(expression: str, tz: str) -> Any:
    from prefect.client.schemas.schedules import CronSchedule

    return CronSchedule(cron=expression, timezone=tz)


def _logs(client: Any, flow_run_id: Any, expect: str, timeout: float = 20) -> str:
    """The run's logs once ``expect`` is among them (logs arrive in batches) or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        text = "\n".join(entry.message for entry in logs)
        if expect in text or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def test_a_worker_takes_the_urgent_run_before_an_earlier_nightly_run(
        deployed: SetupReport, prefect_server_api: str, gf_home: Settings, tmp_path: Path):
    env = {"PREFECT_API_URL": prefect_server_api, "GALLERYFLOW_HOME": str(gf_home.home),
           "GALLERYFLOW_CONFIG": str(tmp_path / "none.toml")}
    with paused_deployments(), get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("process-sets/nightly")
        urgent = client.read_deployment_by_name("process-sets/urgent")
        start = prefect_now("UTC")
        # The nightly run is due first; without queue priorities a worker would take it first.
        queued = client.create_flow_run_from_deployment(
            nightly.id, state=Scheduled(scheduled_time=start - timedelta(seconds=60)))
        rush = client.create_flow_run_from_deployment(
            urgent.id, state=Scheduled(scheduled_time=start - timedelta(seconds=30)))
        with worker("galleryflow", env, tmp_path / "worker.log", limit=1):
            queued_run, rush_run = wait_final(client, [queued.id, rush.id], timeout=180)
            # (read while the worker lives: a run's last log batch leaves as its process ends)
            logs = {intake: _logs(client, run.id, f"nothing to do: no sets ready under {intake}")
                    for run, intake in ((queued_run, "queue"), (rush_run, "urgent"))}
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        assert rush_run.state.is_completed(), worker_log
        assert queued_run.state.is_completed(), worker_log
        assert rush_run.start_time < queued_run.start_time
        # A scheduled run with nothing to do ends Completed, saying so.
        for intake, text in logs.items():
            assert f"nothing to do: no sets ready under {intake}" in text


def _watch_runs(client: Any, folder: Path) -> list[Any]:
    urgent = client.read_deployment_by_name("process-sets/urgent")
    return [r for r in runs_of(client, urgent.id)
            if "watch" in (r.tags or []) and r.parameters.get("set_dirs") == [str(folder)]]


def _run_service(settings: Settings, until: Any, timeout: float) -> WatchService:
    """Run a watch service in a thread until ``until(service)`` or the timeout."""
    service = WatchService(settings)
    stop = threading.Event()
    # the thread must see this test's Prefect API (a context variable)
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(service.run, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(service):
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=30)
    return service


def test_watch_turns_a_new_folder_into_exactly_one_run_across_restarts(
        deployed: SetupReport, prefect_server_api: str, gf_home: Settings, db: str):
    settings = gf_home.model_copy(update={"watch": gf_home.watch.model_copy(
        update={"quiet_seconds": 0.5, "poll_interval_seconds": 0.2})})
    urgent_dir = settings.home / "intake" / "urgent"
    with paused_deployments(), get_client(sync_client=True) as client:
        # A folder that appears while the service runs, with a stray text file.
        def drop_set() -> None:
            time.sleep(1)
            folder = make_set(urgent_dir, "press-day", 2, size=(320, 240))
            (folder / "invoice.pdf").write_bytes(b"%PDF-1.4")

        threading.Thread(target=drop_set).start()
        first = _run_service(settings, lambda s: bool(s.started_runs), timeout=60)
        folder = (urgent_dir / "press-day").resolve()
        assert len(first.started_runs) == 1
        (run,) = _watch_runs(client, folder)
        assert str(run.id) == first.started_runs[0] and run.work_queue_name == "urgent"

        # Restarted: the set is still there, still ready, and is not started again.
        second = _run_service(settings, lambda s: False, timeout=3)
        assert second.started_runs == [] and len(_watch_runs(client, folder)) == 1

        # A service that stopped after claiming a set, even after creating its run,
        # finishes on restart without a second run.
        other = make_set(urgent_dir, "late-news", 1, size=(320, 240)).resolve()
        pending = claim(content_digest(inspect_folder(other, settings), settings), str(other),
                        "urgent", None)
        deployment_run_starter(settings)(pending)  # the run exists, the claim does not know it
        third = _run_service(settings, lambda s: bool(s.started_runs), timeout=30)
        assert len(third.started_runs) == 1
        assert [str(r.id) for r in _watch_runs(client, other)] == third.started_runs
        assert len(_watch_runs(client, folder)) == 1


def test_watch_leaves_queue_sets_for_the_nightly_run(deployed: SetupReport, prefect_server_api: str,
                                                     gf_home: Settings, db: str):
    folder = make_set(gf_home.home / "intake" / "queue", "archive", 1, size=(320, 240))
    (folder / ".ready").touch()
    service = WatchService(gf_home, one_shot=True)
    service.tick()
    assert service.started_runs == []
    # ... and the nightly run takes it (claims it) exactly once.
    from galleryflow.intake.queue import discover_sets

    assert discover_sets(Path("queue"), gf_home) == [folder]
    assert discover_sets(Path("queue"), gf_home) == []


def test_run_hands_the_sets_to_a_worker_and_waits_through_the_gate(
        deployed: SetupReport, prefect_server_api: str, gf_home: Settings, tmp_path: Path, db: str):
    """`galleryflow run SET --wait` with a server: the urgent deployment takes the set,
    a real worker runs it, the gate is answered through the API, the CLI reports the end."""
    from typer.testing import CliRunner

    from galleryflow.app.cli import app
    from galleryflow.review.answer import answer_gate, build_answer, open_gates
    from tests.fixtures.rows import by_name, load_photos
    from tests.services import free_port

    env = {"PREFECT_API_URL": prefect_server_api, "GALLERYFLOW_HOME": str(gf_home.home),
           "GALLERYFLOW_CONFIG": str(tmp_path / "none.toml"),
           "GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED": "true",
           "GALLERYFLOW_OLLAMA__HOST": f"http://127.0.0.1:{free_port()}",
           "GALLERYFLOW_OLLAMA__CONNECT_TIMEOUT_SECONDS": "1",
           "GALLERYFLOW_REVIEW__POLL_INTERVAL_SECONDS": "1"}
    folder = make_set(tmp_path / "sets", "market-day", 2, size=(320, 240))
    answered: list[str] = []

    def reviewer() -> None:  # a person in the UI, through the same API
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not answered:
            for gate in open_gates()[0]:
                answer_gate(gate, build_answer(gate, approve_all=True, reviewer="ops test"))
                answered.append(gate.flow_run_id)
            time.sleep(0.5)

    with paused_deployments(), worker("galleryflow", env, tmp_path / "worker.log", limit=1):
        thread = threading.Thread(target=contextvars.copy_context().run, args=(reviewer,),
                                  daemon=True)
        thread.start()
        result = CliRunner().invoke(app, ["run", str(folder), "--wait"])
        thread.join(30)
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert result.exit_code == 0, (result.output, worker_log)
    assert "of process-sets/urgent" in result.output and "ended Completed" in result.output
    (run_id,) = answered
    assert f"galleryflow review {run_id}" in result.output  # how to answer from a terminal
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.work_queue_name == "urgent"
    assert run.parameters["set_dirs"] == [str(folder.resolve())]
    found = by_name(load_photos())
    assert {r.status for r in found.values()} == {"published"} and len(found) == 2
    assert {r.reviewer for r in found.values()} == {"ops test"}
