"""The ``batch-process`` flow through Prefect's test harness, the detached runner, its
status and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from galleryflow.batch.status import get_job, list_jobs
from galleryflow.app.cli_batch import batch_app
from tests.fixtures import photos as gen
from tests.fixtures.batch import end_command, wait_until_running

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


@pytest.fixture(autouse=True)
def _local_runner(monkeypatch):
    """Jobs started by the CLI run in a detached local worker (never a deployment)."""
    monkeypatch.setenv("GALLERYFLOW_BATCH__RUNNER", "local")


def _photos(folder: Path, count: int = 3) -> list[Path]:
    return [gen.jpeg(folder / f"p{i}.jpg", (640, 480), seed=i) for i in range(count)]


def _artifacts(job_id: str) -> dict[str, object]:
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(job_id)])))
    return {a.type: a for a in found}


def test_flow_runs_a_job_and_reports_every_file(tmp_path):
    from flows.batch import batch_process

    folder = tmp_path / "photos"
    _photos(folder / "day1", 3)
    gen.truncated_jpeg(folder / "day2" / "broken.jpg")
    gen.text_named(folder / "day2" / "notes.jpg")
    out = tmp_path / "web"
    summary = batch_process(input_pattern=str(folder / "**" / "*.jpg"), output_directory=str(out),
                            preset="web_optimized", parameters={"width": 320})
    assert set(summary) >= {"id", "operation", "status", "progress", "completed", "failed",
                            "not_processed", "total", "duration"}
    assert (summary["operation"], summary["status"], summary["total"], summary["completed"],
            summary["failed"], summary["progress"]) == ("resize", "partial", 5, 3, 2, 100.0)
    for i in range(3):
        img = Image.open(out / "day1" / f"p{i}.webp")
        assert (img.format, img.size) == ("WEBP", (320, 240))
    job = get_job(summary["id"])
    errors = {Path(f.path).name: f.error for f in job.files if f.status == "failed"}
    assert errors["broken.jpg"].startswith("broken.jpg: Corrupted file")
    assert errors["notes.jpg"].startswith("notes.jpg: Unsupported format")
    assert job.files[0].status == "failed"  # failures first
    # The job id is the flow run id, and Prefect holds the progress and table artifacts.
    artifacts = _artifacts(summary["id"])
    assert artifacts["progress"].data == 100.0
    table = artifacts["table"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {r["file"]: r["status"] for r in rows}["broken.jpg"] == "failed"
    assert len(rows) == 5


def test_rerun_skips_finished_outputs(tmp_path):
    from flows.batch import batch_process

    _photos(tmp_path / "in", 3)
    args = dict(input_pattern=str(tmp_path / "in" / "*.jpg"), operation="thumbnail",
                output_directory=str(tmp_path / "thumbs"))
    first = batch_process(**args)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "thumbs").glob("*.jpg")}
    second = batch_process(**args)
    assert first["status"] == second["status"] == "completed"
    assert (second["completed"], second["skipped"]) == (3, 3)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "thumbs").glob("*.jpg")} == stamps
    assert first["id"] != second["id"]


def test_job_level_faults_fail_before_any_work(tmp_path, gf_home):
    from flows.batch import batch_process
    from galleryflow.batch.preflight import JobRefused

    _photos(tmp_path / "in", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobRefused, match="resize needs width"):
        batch_process(input_pattern=str(tmp_path / "in" / "*.jpg"), operation="resize",
                      output_directory=str(tmp_path / "o1"))
    with pytest.raises(JobRefused, match="No files match"):
        batch_process(input_pattern=str(tmp_path / "empty" / "*.jpg"), operation="thumbnail",
                      output_directory=str(tmp_path / "o2"))
    gf_home.batch.disk_headroom_bytes = 10**18  # more than any disk: the estimate check trips
    with pytest.raises(JobRefused, match="Not enough free disk"):
        batch_process(input_pattern=str(tmp_path / "in" / "*.jpg"), operation="thumbnail",
                      output_directory=str(tmp_path / "o3"))
    for name in ("o1", "o2", "o3"):
        assert not (tmp_path / name).exists()  # a refused job creates no output folder
    failed = [j for j in list_jobs() if j.status == "failed"]
    assert len(failed) == 3
    assert any(j.error.startswith("No files match") for j in failed)
    assert any("Not enough free disk" in j.error for j in failed)
    assert any("resize needs width" in j.error for j in failed)


def test_disk_filling_up_mid_job_stops_it_cleanly(tmp_path, monkeypatch):
    """The OS reports the disk full after the first file (simulated: free space is
    read through shutil.disk_usage, which we make report what a filling disk would)."""
    from flows.batch import BatchJobError, batch_process

    _photos(tmp_path / "in", 4)
    real = shutil.disk_usage
    calls = {"n": 0}

    def filling(path):  # type: ignore[no-untyped-def]
        usage = real(path)
        calls["n"] += 1
        # the flow's start check passes, then the per-file checks see the disk full
        return usage if calls["n"] <= 2 else usage._replace(free=1024)

    monkeypatch.setattr(shutil, "disk_usage", filling)
    with pytest.raises(BatchJobError, match="Disk full"):
        batch_process(input_pattern=str(tmp_path / "in" / "*.jpg"), operation="thumbnail",
                      output_directory=str(tmp_path / "out"))
    job = list_jobs()[0]
    assert job.status == "failed" and "Disk full" in job.error
    assert (job.completed, job.failed, job.not_processed) == (1, 0, 3)
    files = get_job(job.id).files
    assert sorted(f.status for f in files) == ["completed"] + ["not processed"] * 3
    assert all("not processed: Disk full" in f.error for f in files if f.status != "completed")


def test_cli_process_and_status(tmp_path):
    app = typer.Typer()
    app.add_typer(batch_app, name="batch")
    runner = CliRunner()
    _photos(tmp_path / "in", 2)
    gen.text_named(tmp_path / "in" / "bad.jpg")
    result = runner.invoke(app, ["batch", "process", "--input", str(tmp_path / "in" / "*.jpg"),
                                 "--operation", "resize", "--output", str(tmp_path / "out"),
                                 "--param", "width=200", "--param", "format=webp"])
    assert result.exit_code == 3, result.output  # partial: some files failed
    assert "2 completed" in result.output and "1 failed of 3" in result.output
    assert "bad.jpg: Unsupported format" in result.output
    assert Image.open(tmp_path / "out" / "p0.webp").size == (200, 150)

    listing = runner.invoke(app, ["batch", "status", "--json"])
    jobs = json.loads(listing.stdout)["jobs"]  # the MCP tool's shape
    assert jobs[0]["status"] == "partial" and jobs[0]["operation"] == "resize"
    one = json.loads(runner.invoke(app, ["batch", "status", jobs[0]["id"], "--json"]).stdout)
    assert one["id"] == jobs[0]["id"] and len(one["files"]) == 3
    assert one["files"][0] == {**one["files"][0], "path": str(tmp_path / "in" / "bad.jpg"),
                               "status": "failed"}
    assert one["files"][0]["error"] == "bad.jpg: Unsupported format: not an image Pillow can read"
    assert {f["status"] for f in one["files"][1:]} == {"completed"}
    assert one["requested"] == {"width": "200", "format": "webp"}  # as given
    assert (one["parameters"]["width"], one["parameters"]["format"], one["parameters"]["quality"],
            one["parameters"]["fit"]) == (200, "webp", None, "fit")  # what ran
    assert one["output_directory"] == str(tmp_path / "out")

    preset = runner.invoke(app, ["batch", "process", "--input", str(tmp_path / "in" / "p*.jpg"),
                                 "--preset", "web_optimized", "--output", str(tmp_path / "web")])
    assert preset.exit_code == 0, preset.output
    ran = get_job(list_jobs()[0].id, files=False)
    assert (ran.preset, ran.requested, ran.parameters["width"], ran.parameters["format"],
            ran.parameters["strip_gps"]) == ("web_optimized", {}, 1280, "webp", True)

    from galleryflow.app.batch_jobs import wait_for_job

    detached = runner.invoke(app, ["batch", "process", "--input", str(tmp_path / "in" / "p*.jpg"),
                                   "--preset", "thumbnail", "--output", str(tmp_path / "t"),
                                   "--detach"])
    assert detached.exit_code == 0 and "started; follow it with" in detached.output
    job_id = detached.output.split("job ", 1)[1].split()[0]
    assert wait_for_job(job_id, timeout=60) and get_job(job_id).status == "completed"

    bad = runner.invoke(app, ["batch", "process", "--input", "x/*.jpg", "--output", "o",
                              "--preset", "nope"])
    assert bad.exit_code == 2 and "unknown preset 'nope'" in bad.output
    missing = runner.invoke(app, ["batch", "status", "no-such-job"])
    assert missing.exit_code == 1


def _outputs(folder: Path, suffix: str) -> list[Path]:
    return [p for p in folder.rglob(f"*{suffix}") if not p.name.startswith(".")
            and ".galleryflow-batch" not in p.parts]


def test_a_cli_job_outlives_its_terminal_and_a_killed_job_reports_the_outputs_on_disk(
        gf_home, tmp_path):
    """SIGKILL the CLI that started a job: the job runs on (its worker is in a session of
    its own). SIGKILL the worker: the next status read finds the job crashed, with its
    progress equal to the outputs on disk; nothing the CLI started is left running (no
    server of any kind); the same job run again only does the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from flows.batch import batch_process

    folder = tmp_path / "many"
    for i in range(24):
        gen.jpeg(folder / f"m{i:02d}.jpg", (1200, 900), seed=i)
    pattern, out = str(folder / "*.jpg"), tmp_path / "out"
    args = ["--input", pattern, "--output", str(out), "--operation", "convert",
            "--param", "format=png", "--param", "width=1000"]
    env = {**os.environ, "GALLERYFLOW_BATCH__WORKERS": "1"}
    cli = subprocess.Popen([sys.executable, "-m", "galleryflow.app.cli", "batch", "process", *args],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    started: list[psutil.Process] = []
    try:
        running = wait_until_running(cli, completed=2)
        started = psutil.Process(cli.pid).children(recursive=True)
        os.killpg(cli.pid, signal.SIGKILL)  # the terminal goes, with its process group
        cli.wait(30)
        job_id = running[0].id
        before = get_job(job_id, files=False).completed
        time.sleep(1.0)
        going = get_job(job_id, files=False)
        assert going.status == "running" and going.completed > before  # it outlived the CLI

        # The worker the CLI forked (or spawned: `python -m galleryflow.app.batch_worker`),
        # the one process it started that outlived it.
        (worker,) = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
    finally:
        end_command(cli, started)

    job = get_job(job_id)
    assert job.status == "crashed"
    assert f"pid {worker.pid}" in job.error and "Run the same job again" in job.error
    assert job.completed == len(_outputs(out, ".png"))  # progress = the outputs on disk
    assert 2 <= job.completed < job.total == 24 and job.not_processed == 24 - job.completed
    assert {f.status for f in job.files} == {"completed"}
    assert job.finished_at is not None
    assert {j.id: j.status for j in list_jobs()}[job.id] == "crashed"  # stored, not only shown
    time.sleep(0.2)
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"

    rerun = batch_process(input_pattern=pattern, operation="convert", output_directory=str(out),
                          parameters={"format": "png", "width": 1000})
    assert rerun["status"] == "completed" and rerun["total"] == 24
    assert rerun["skipped"] >= job.completed  # the killed run's finished outputs are kept
    assert len(_outputs(out, ".png")) == 24


def test_a_silent_job_of_another_host_is_shown_stale(gf_home):
    from datetime import timedelta

    from galleryflow.db.engine import session_scope
    from galleryflow.db.models import BatchJob, utcnow

    with session_scope() as session:
        session.add(BatchJob(id="far-away", operation="resize", input_pattern="*.jpg",
                             output_directory="out", status="running", total=10, completed=3,
                             started_at=utcnow() - timedelta(hours=2), owner="render-02:4242:1.00",
                             heartbeat_at=utcnow() - timedelta(minutes=11)))
        session.add(BatchJob(id="near-away", operation="resize", input_pattern="*.jpg",
                             output_directory="out", status="running", total=10, completed=3,
                             started_at=utcnow() - timedelta(hours=2), owner="render-02:4243:1.00",
                             heartbeat_at=utcnow() - timedelta(minutes=2)))
    job = get_job("far-away")
    assert job.status == "stale" and "render-02:4242" in job.error
    assert {j.id: j.status for j in list_jobs()} == {"far-away": "stale", "near-away": "running"}
    with session_scope() as session:  # shown, not stored: the far host may still be working
        assert session.get(BatchJob, "far-away").status == "running"


def test_a_disk_filling_up_mid_job_fails_it_with_the_reason_and_leaves_no_partial_file(
        tmp_path, gf_home, monkeypatch):
    """A small file system, by fault injection at the write layer (portable: no mount):
    three outputs fit, the fourth write stops half-way with ENOSPC, as would every write
    after it. The job stops ``failed`` with the reason; the file in hand and the rest are
    ``not processed``; no partial file is left, under any name."""
    import errno
    import os
    import threading

    from galleryflow.batch import jobs, outputs
    from galleryflow.batch.preflight import prepare
    from galleryflow.batch.presets import BatchRequest
    from galleryflow.batch.runner import run_job

    _photos(tmp_path / "in", 8)
    out = tmp_path / "out"
    writes = {"n": 0}
    lock = threading.Lock()
    real_write_all = outputs._write_all

    def small_disk(handle, data):  # type: ignore[no-untyped-def]
        with lock:
            writes["n"] += 1
            full = writes["n"] > 3
        if full:
            handle.write(data[: len(data) // 2])  # part of the file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(handle, data)

    monkeypatch.setattr(outputs, "_write_all", small_disk)
    gf_home.batch.workers = 2
    request = BatchRequest(input_pattern=str(tmp_path / "in" / "*.jpg"), operation="convert",
                           output_directory=str(out), parameters={"format": "png"})
    jobs.create_prepared("full-disk", request, prepare(request, gf_home), gf_home)
    assert run_job("full-disk") == "failed"

    job = get_job("full-disk")
    assert job.status == "failed"
    assert job.error == f"Disk full: no space left on the file system of the output folder {out}"
    assert (job.completed, job.failed, job.not_processed, job.total) == (3, 0, 5, 8)
    statuses = sorted(f.status for f in job.files)
    assert statuses == ["completed"] * 3 + ["not processed"] * 5
    for f in job.files:
        if f.status == "not processed":
            assert f.error == f"{Path(f.path).name}: not processed: {job.error}"
    left = [p for p in out.rglob("*") if p.is_file() and ".galleryflow-batch" not in p.parts]
    assert sorted(p.name for p in left) == sorted(Path(f.output).name for f in job.files
                                                  if f.status == "completed")
    for path in left:  # every file there is whole
        with Image.open(path) as img:
            img.load()


def test_a_worker_told_to_stop_ends_the_job_failed_with_the_rest_not_processed(gf_home, tmp_path):
    import os
    import signal
    import time

    from galleryflow.app.batch_jobs import start_job, wait_for_job
    from galleryflow.batch.presets import BatchRequest

    folder = tmp_path / "in"
    for i in range(16):
        gen.jpeg(folder / f"s{i:02d}.jpg", (1000, 750), seed=i)
    gf_home.batch.workers = 1
    job_id = start_job(BatchRequest(input_pattern=str(folder / "*.jpg"), operation="convert",
                                    output_directory=str(tmp_path / "out"),
                                    parameters={"format": "png"}))
    deadline = time.monotonic() + 60
    while get_job(job_id, files=False).completed < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(_owner_pid(job_id))
    os.kill(pid, signal.SIGTERM)
    assert wait_for_job(job_id, timeout=60)
    job = get_job(job_id)
    assert job.status == "failed" and job.error == "stopped: the worker process received SIGTERM"
    assert job.completed >= 1 and job.not_processed >= 1
    assert job.completed + job.not_processed == 16 and job.failed == 0
    assert len(_outputs(tmp_path / "out", ".png")) == job.completed


def _owner_pid(job_id: str) -> str:
    from galleryflow.db.engine import session_scope
    from galleryflow.db.models import BatchJob

    with session_scope() as session:
        return session.get(BatchJob, job_id).owner.rsplit(":", 2)[1]


def test_each_file_reads_the_stop_reason_once_and_its_headers_once(gf_home, tmp_path,
                                                                     monkeypatch):
    """A file's record reads the job's stop reason in its own transaction, and the
    thread's next file takes that (fresh) reading instead of a transaction of its own;
    the runner's disk check and the processing share one read of the headers. A stop
    asked for by another process is still seen before the next file that starts after
    the reading it missed goes stale."""
    from galleryflow.batch import jobs, runner
    from galleryflow.batch.preflight import prepare
    from galleryflow.batch.presets import BatchRequest
    from galleryflow.imaging import media

    _photos(tmp_path / "in", 4)
    gf_home.batch.disk_headroom_bytes = 1024  # the per-file disk check runs
    reads = {"reason": 0, "probe": 0}
    real_reason, real_probe = jobs.stop_reason, media.probe

    def counted_reason(job_id):  # type: ignore[no-untyped-def]
        reads["reason"] += 1
        return real_reason(job_id)

    def counted_probe(path):  # type: ignore[no-untyped-def]
        reads["probe"] += 1
        return real_probe(path)

    monkeypatch.setattr(jobs, "stop_reason", counted_reason)
    monkeypatch.setattr(media, "probe", counted_probe)

    def job(name: str) -> str:
        request = BatchRequest(input_pattern=str(tmp_path / "in" / "*.jpg"),
                               operation="thumbnail", output_directory=str(tmp_path / name))
        jobs.create_prepared(name, request, prepare(request, gf_home), gf_home)
        return name

    assert jobs.record_file(job("asks"), jobs.not_processed("x.jpg", "test")) is None
    jobs.stop_job("asks", "stopped: by a test")
    assert jobs.record_file("asks", jobs.not_processed("y.jpg", "test")) == "stopped: by a test"

    quick = job("quick")  # the job's check reads every file's headers first
    reads.update(reason=0, probe=0)
    assert runner.run_job(quick, workers=1) == "completed"
    assert reads == {"reason": 1, "probe": 4}  # one thread: only its first file asks

    # Another process stops the job while the thread is between files: a reading that
    # is no longer fresh is not used, so the next file is not processed.
    stopped = job("stopped")
    real_record = jobs.record_file

    def record_then_stopped_elsewhere(job_id, result):  # type: ignore[no-untyped-def]
        reason = real_record(job_id, result)
        if result.status == "completed":
            jobs.stop_job(job_id, "stopped: by another process")
        return reason

    monkeypatch.setattr(jobs, "record_file", record_then_stopped_elsewhere)
    monkeypatch.setattr(runner, "FRESH_SECONDS", 0.0)
    assert runner.run_job(stopped, workers=1) == "failed"
    ended = get_job(stopped)
    assert (ended.completed, ended.not_processed) == (1, 3)
    assert ended.error == "stopped: by another process"
