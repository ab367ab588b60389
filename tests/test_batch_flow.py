"""The ``batch-process`` flow through Prefect's test harness, its status and the CLI."""

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

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


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
                            "total", "duration"}
    assert (summary["operation"], summary["status"], summary["total"], summary["completed"],
            summary["failed"], summary["progress"]) == ("resize", "partial", 5, 3, 2, 100.0)
    for i in range(3):
        img = Image.open(out / "day1" / f"p{i}.webp")
        assert (img.format, img.size) == ("WEBP", (320, 240))
    job = get_job(summary["id"])
    errors = {Path(f.input).name: f.error for f in job.files if f.status == "failed"}
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
    from flows.batch import BatchJobError, batch_process
    from galleryflow.batch.presets import PresetError

    _photos(tmp_path / "in", 2)
    with pytest.raises(PresetError, match="resize needs width"):
        batch_process(input_pattern=str(tmp_path / "in" / "*.jpg"), operation="resize",
                      output_directory=str(tmp_path / "o1"))
    with pytest.raises(BatchJobError, match="No files match"):
        batch_process(input_pattern=str(tmp_path / "nothing" / "*.jpg"), operation="thumbnail",
                      output_directory=str(tmp_path / "o2"))
    gf_home.batch.disk_headroom_bytes = 10**18  # more than any disk: the estimate check trips
    with pytest.raises(BatchJobError, match="Not enough free disk"):
        batch_process(input_pattern=str(tmp_path / "in" / "*.jpg"), operation="thumbnail",
                      output_directory=str(tmp_path / "o3"))
    assert not list((tmp_path / "o3").glob("*.jpg"))
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
    assert job.completed == 1 and job.failed == 3
    assert all("not processed: Disk full" in f.error for f in get_job(job.id).files
               if f.status == "failed")


def test_cli_process_and_status(tmp_path):
    app = typer.Typer()
    app.add_typer(batch_app, name="batch")
    runner = CliRunner()
    _photos(tmp_path / "in", 2)
    gen.text_named(tmp_path / "in" / "bad.jpg")
    result = runner.invoke(app, ["batch", "process", "--input", str(tmp_path / "in" / "*.jpg"),
                                 "--operation", "resize", "--output", str(tmp_path / "out"),
                                 "--param", "width=200", "--param", "format=webp"])
    assert result.exit_code == 0, result.output
    assert "2 done" in result.output and "1 failed of 3" in result.output
    assert "bad.jpg: Unsupported format" in result.output
    assert Image.open(tmp_path / "out" / "p0.webp").size == (200, 150)

    listing = runner.invoke(app, ["batch", "status", "--json"])
    jobs = json.loads(listing.stdout)
    assert jobs[0]["status"] == "partial" and jobs[0]["operation"] == "resize"
    one = json.loads(runner.invoke(app, ["batch", "status", jobs[0]["id"], "--json"]).stdout)
    assert one["id"] == jobs[0]["id"] and len(one["files"]) == 3
    assert one["files"][0]["error"] == "bad.jpg: Unsupported format: not an image Pillow can read"
    assert one["parameters"] == {"width": "200", "format": "webp"}

    bad = runner.invoke(app, ["batch", "process", "--input", "x/*.jpg", "--output", "o",
                              "--preset", "nope"])
    assert bad.exit_code == 2 and "unknown preset 'nope'" in bad.output
    missing = runner.invoke(app, ["batch", "status", "no-such-job"])
    assert missing.exit_code == 1


def test_a_killed_job_is_reported_crashed_and_a_rerun_skips_what_it_finished(
        gf_home, tmp_path, monkeypatch):
    """SIGKILL leaves no chance to write the end: the next status read sees the dead
    process, marks the job crashed with how far it got, and the same job run again
    only does the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    from flows.batch import batch_process

    folder = tmp_path / "many"
    for i in range(24):
        gen.jpeg(folder / f"m{i:02d}.jpg", (1200, 900), seed=i)
    pattern, out = str(folder / "*.jpg"), tmp_path / "out"
    args = ["--input", pattern, "--output", str(out), "--operation", "convert",
            "--param", "format=png", "--param", "width=1000"]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "GALLERYFLOW_BATCH__WORKERS": "1", "GALLERYFLOW_BATCH__CHUNK_SIZE": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "galleryflow.app.cli", "batch", "process", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        running = []
        while time.monotonic() < deadline and proc.poll() is None:
            running = [j for j in list_jobs() if j.status == "running" and j.completed >= 2]
            if running:
                break
            time.sleep(0.2)
        assert running, f"the job never got going: {proc.stderr.read().decode() if proc.poll() is not None else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stderr.close()

    job = get_job(running[0].id, files=False)
    assert job.status == "crashed"
    assert f"pid {proc.pid}" in job.error and "Run the same job again" in job.error
    done_before = job.completed + job.failed
    assert 2 <= done_before < job.total == 24
    assert job.finished_at is not None
    listed = {j.id: j.status for j in list_jobs()}
    assert listed[job.id] == "crashed"  # stored, not only shown

    rerun = batch_process(input_pattern=pattern, operation="convert", output_directory=str(out),
                          parameters={"format": "png", "width": 1000})
    assert rerun["status"] == "completed" and rerun["total"] == 24
    assert rerun["skipped"] >= done_before  # the killed run's finished outputs are kept
    assert len(list(out.glob("*.png"))) == 24


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
