"""Stage progress reaches Prefect from one background thread, never from the stage's
own threads, and a flow's artifacts are final when it returns."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from galleryflow.core import progress as progress_module
from galleryflow.core.progress import StageProgress, flushed

pytestmark = pytest.mark.usefixtures("prefect_api")


def _progress_artifacts(flow_run_id: str) -> list:
    with get_client(sync_client=True) as client:
        return [a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])))
            if a.type == "progress"]


def test_progress_is_sent_by_one_thread_coalesced_and_final_when_the_flow_returns(monkeypatch):
    import prefect.artifacts as artifacts

    calls: list[tuple[str, str, float]] = []  # (what, thread, progress)
    real_create, real_update = artifacts.create_progress_artifact, artifacts.update_progress_artifact

    def create(*args, **kwargs):
        calls.append(("create", threading.current_thread().name, kwargs["progress"]))
        time.sleep(0.05)  # a server that takes its time: the stage must not wait for it
        return real_create(*args, **kwargs)

    def update(*args, **kwargs):
        calls.append(("update", threading.current_thread().name, kwargs["progress"]))
        time.sleep(0.05)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(artifacts, "create_progress_artifact", create)
    monkeypatch.setattr(artifacts, "update_progress_artifact", update)
    waits: list[float] = []

    @flow
    @flushed
    def stage_of_forty() -> str:
        from prefect.runtime import flow_run

        started = time.perf_counter()
        progress = StageProgress("demo", 40, min_interval=0.0)  # every advance asks for a push
        waits.append(time.perf_counter() - started)

        def one(_: int) -> None:
            started = time.perf_counter()
            progress.advance()
            waits.append(time.perf_counter() - started)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(40)))
        return flow_run.id

    flow_run_id = stage_of_forty()
    assert max(waits) < 0.04  # no advance (nor the start) waited for a 50-ms request
    assert {thread for _, thread, _ in calls} == {"progress-pusher"}
    assert calls[0][0] == "create" and [c[0] for c in calls[1:]] == ["update"] * (len(calls) - 1)
    assert len(calls) < 20  # 41 pushes asked for, sent as the latest each time one was free
    assert calls[-1][2] == 100.0
    (artifact,) = _progress_artifacts(flow_run_id)  # final when the flow returned
    assert artifact.data == 100.0 and artifact.description == "demo: 40 of 40 images"


def test_a_progress_that_cannot_be_created_warns_once_and_never_fails_the_stage(monkeypatch,
                                                                                caplog):
    import prefect.artifacts as artifacts

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(kwargs)
        raise RuntimeError("server said no")

    monkeypatch.setattr(artifacts, "create_progress_artifact", refuse)
    monkeypatch.setattr(artifacts, "update_progress_artifact",
                        lambda *a, **k: pytest.fail("updated an artifact that was never made"))

    @flow
    @flushed
    def stage_of_three() -> int:
        progress = StageProgress("demo", 3, min_interval=0.0)
        for _ in range(3):
            progress.advance()
        return progress.done

    assert stage_of_three() == 3
    assert len(attempts) == 1
    assert "could not create the demo progress artifact: server said no" in caplog.text


def test_outside_a_run_only_the_listeners_hear_of_it(monkeypatch):
    monkeypatch.setattr(progress_module, "_pusher", lambda: pytest.fail("sent outside a run"))
    heard: list[tuple[str, int, int]] = []
    listener = lambda *event: heard.append(event)  # noqa: E731 - the terminal bar's place
    progress_module.add_listener(listener)
    try:
        local = StageProgress("local", 2)
        local.advance(2)
    finally:
        progress_module.remove_listener(listener)
    assert heard == [("local", 0, 2), ("local", 2, 0)]


def test_a_forked_child_does_not_inherit_the_pushers_state():
    import os

    progress_module._pusher()  # this process has one
    pid = os.fork()
    if pid == 0:  # the child: a warm process's command
        os._exit(0 if progress_module._the_pusher is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert progress_module._the_pusher is not None


def test_a_runs_reports_are_sent_off_its_thread_in_order_and_before_it_returns(monkeypatch,
                                                                               caplog):
    """send_later: the flow's own thread does not wait for the server; the reports are
    created in the order asked, belong to the run, and exist when the flow returns; one
    the server refuses is a warning, never a failed run."""
    from prefect.artifacts import create_markdown_artifact

    from galleryflow.core.progress import send_later

    sent: list[tuple[str, str]] = []
    waited: list[float] = []

    def slow_report(key: str) -> None:
        sent.append((key, threading.current_thread().name))
        time.sleep(0.05)  # a busy server
        create_markdown_artifact(key=key, markdown=f"# {key}")

    def refused() -> None:
        raise RuntimeError("server said no")

    @flow
    @flushed
    def run_with_reports() -> str:
        from prefect.runtime import flow_run

        started = time.perf_counter()
        send_later("first report", lambda: slow_report("first-report"))
        send_later("refused report", refused)
        send_later("second report", lambda: slow_report("second-report"))
        waited.append(time.perf_counter() - started)
        return flow_run.id

    flow_run_id = run_with_reports()
    assert waited[0] < 0.04  # three reports asked for, none waited for
    assert sent == [("first-report", "progress-pusher"), ("second-report", "progress-pusher")]
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))) if a.key}
    assert keys == {"first-report", "second-report"}
    assert "could not send the refused report: server said no" in caplog.text


def test_outside_a_run_a_report_is_sent_at_once(monkeypatch):
    from galleryflow.core.progress import send_later

    monkeypatch.setattr(progress_module, "_pusher", lambda: pytest.fail("queued outside a run"))
    sent = []
    send_later("report", lambda: sent.append(threading.current_thread().name))
    assert sent == [threading.current_thread().name]
