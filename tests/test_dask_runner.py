"""Scale-out: process-sets with the Dask task runner (prefect-dask), chosen by a setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from galleryflow.db import Photo, session_scope
from galleryflow.core.settings import Settings, get_settings, reset_settings
from tests.fixtures.photos import make_set

pytestmark = pytest.mark.integration


def test_the_threads_runner_is_the_default(gf_home: Settings):
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.runners import build_task_runner

    assert isinstance(build_task_runner(gf_home), ThreadPoolTaskRunner)


def test_a_small_set_runs_through_the_dask_runner(prefect_server_api: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    import prefect_dask  # the test extra installs it

    from flows.process_sets import process_sets as base
    from flows.runners import deployable

    from flows.gate import add_gate_listener, remove_gate_listener
    from galleryflow.review.answer import auto_approver
    from tests.fixtures.ollama import PRIMARY
    from tests.services.ollama_stub import OllamaStub

    stub = OllamaStub(models=(PRIMARY,)).start()
    # Dask workers are separate processes: they find the API, the home and the
    # vision model (the stand-in) in the environment.
    monkeypatch.setenv("GALLERYFLOW_OLLAMA__HOST", stub.host)
    monkeypatch.setenv("GALLERYFLOW_OLLAMA__MODEL", PRIMARY)
    monkeypatch.setenv("GALLERYFLOW_REVIEW__POLL_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("PREFECT_API_URL", prefect_server_api)
    monkeypatch.setenv("GALLERYFLOW_TASK_RUNNER", "dask")
    monkeypatch.setenv("GALLERYFLOW_OPS__DASK_WORKERS", "1")
    reset_settings()
    settings = get_settings()
    flow = deployable(base, settings)
    assert isinstance(flow.task_runner, prefect_dask.DaskTaskRunner)

    folder = make_set(tmp_path / "sets", "dask-shore", 3, size=(640, 480))
    listener = auto_approver(reviewer="pytest")  # the gate runs in the flow's own process
    add_gate_listener(listener)
    try:
        summary = flow([str(folder)])
    finally:
        remove_gate_listener(listener)
        stub.stop()
    assert [(s.name, s.status, s.images) for s in summary.sets] == [("dask-shore", "completed", 3)]
    assert sorted(p.name for p in (settings.incoming_dir / "dask-shore").rglob("*")
                  if p.is_file()) == ["dask-shore-01.jpg", "dask-shore-02.jpg", "dask-shore-03.jpg"]
    with session_scope() as db:
        assert db.scalar(select(func.count(Photo.id))) == 3
        rows = list(db.scalars(select(Photo)))
        assert {r.camera_make for r in rows} != {None}  # EXIF read on Dask workers
        assert all(r.caption for r in rows)  # captioned on Dask workers, through the stand-in
    assert len(stub.chat_calls(PRIMARY)) >= 3
