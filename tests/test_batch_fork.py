"""`galleryflow batch process` forks its worker (no second Python start-up): the worker
outlives a SIGKILLed CLI, the job, its files and its progress are recorded, the CLI's
exit status follows the job, the CLI never imports Prefect or the DB layer, and a job
the worker cannot record writes nothing. Real processes throughout (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from galleryflow.batch.outputs import content_digest
from galleryflow.batch.status import get_job, list_jobs
from tests.fixtures import photos as gen
from tests.fixtures.batch import end_command, wait_until_running

pytestmark = [pytest.mark.usefixtures("gf_home"),
              pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                                 reason="the forked worker is for POSIX systems other than macOS")]

CLI = [sys.executable, "-m", "galleryflow.app.cli", "batch", "process"]


@pytest.fixture(autouse=True)
def _local_runner(monkeypatch):
    monkeypatch.setenv("GALLERYFLOW_BATCH__RUNNER", "local")


def _outputs(folder: Path, suffix: str) -> list[Path]:
    return [p for p in folder.rglob(f"*{suffix}") if not p.name.startswith(".")
            and ".galleryflow-batch" not in p.parts]


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=180)
    done.stdout, done.stderr = (" ".join(x.split()) for x in (done.stdout, done.stderr))  # unwrapped
    return done


def test_the_forked_worker_outlives_a_sigkilled_cli_and_records_every_file(tmp_path):
    folder = tmp_path / "in"
    for i in range(16):
        gen.jpeg(folder / f"m{i:02d}.jpg", (1200, 900), seed=i)
    out = tmp_path / "out"
    env = {**os.environ, "GALLERYFLOW_BATCH__WORKERS": "1"}
    cli = subprocess.Popen([*CLI, "--input", str(folder / "*.jpg"), "--output", str(out),
                            "--operation", "convert", "--param", "format=png",
                            "--param", "width=1000"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    worker = None
    try:
        running = wait_until_running(cli, completed=1)
        (worker,) = psutil.Process(cli.pid).children()
        # Forked, not spawned: the same command line as the CLI, no second interpreter
        # started for `galleryflow.app.batch_worker`; in a session of its own.
        assert worker.cmdline() == psutil.Process(cli.pid).cmdline()
        assert os.getsid(worker.pid) == worker.pid != os.getsid(cli.pid)
        assert running[0].total == 16
        os.killpg(cli.pid, signal.SIGKILL)  # the terminal goes, with its process group
        cli.wait(30)
        job_id = running[0].id
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and get_job(job_id, files=False).status == "running":
            time.sleep(0.1)
        worker.wait(30)
    finally:
        end_command(cli, [worker])

    job = get_job(job_id)
    assert (job.status, job.completed, job.failed, job.total) == ("completed", 16, 0, 16)
    assert len(job.files) == 16 and {f.status for f in job.files} == {"completed"}
    assert sorted(Path(f.output).name for f in job.files) == sorted(p.name for p in _outputs(out, ".png"))
    assert all(f.seconds and f.width == 1000 for f in job.files)  # each recorded as it finished
    log = Path(os.environ["GALLERYFLOW_HOME"]) / "logs" / f"batch-{job_id}.log"
    assert f"batch job {job_id}: completed" in log.read_text()  # its output went to the log


def test_the_exit_status_follows_the_job(tmp_path):
    good = tmp_path / "good"
    for i in range(3):
        gen.jpeg(good / f"p{i}.jpg", (640, 480), seed=i)
    gen.text_named(good / "bad.jpg")

    done = _run_cli("--input", str(good / "p*.jpg"), "--preset", "thumbnail",
                    "--output", str(tmp_path / "t"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed, 3 completed, 0 failed of 3" in done.stdout
    assert len(_outputs(tmp_path / "t", ".jpg")) == 3

    partial = _run_cli("--input", str(good / "*.jpg"), "--operation", "resize",
                       "--param", "width=200", "--output", str(tmp_path / "p"))
    assert partial.returncode == 3, partial.stdout + partial.stderr
    assert "3 completed, 1 failed of 4" in partial.stdout
    assert "bad.jpg: Unsupported format" in partial.stdout  # the report's file table

    failed = _run_cli("--input", str(good / "bad.jpg"), "--operation", "resize",
                      "--param", "width=200", "--output", str(tmp_path / "f"))
    assert failed.returncode == 1, failed.stdout + failed.stderr

    refused = _run_cli("--input", str(tmp_path / "nowhere" / "*.jpg"), "--preset", "thumbnail",
                       "--output", str(tmp_path / "r"))
    assert refused.returncode == 2 and "does not exist" in refused.stderr
    statuses = {j.output_directory.rsplit("/", 1)[-1]: j.status for j in list_jobs()}
    assert statuses == {"t": "completed", "p": "partial", "f": "failed"}  # seen from here too


def test_a_job_the_worker_cannot_record_is_refused_and_writes_nothing(tmp_path):
    folder = tmp_path / "in"
    gen.jpeg(folder / "p0.jpg", (640, 480), seed=0)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the DB's folder should be")
    result = _run_cli("--input", str(folder / "*.jpg"), "--preset", "thumbnail",
                      "--output", str(tmp_path / "out"),
                      env={"GALLERYFLOW_DATABASE_URL": f"sqlite:///{blocker}/db/galleryflow.db"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "could not start the job" in result.stderr
    assert not (tmp_path / "out").exists()  # decoded ahead, perhaps; written, never


def test_the_cli_imports_neither_prefect_nor_the_db_layer(tmp_path):
    folder = tmp_path / "in"
    gen.jpeg(folder / "p0.jpg", (640, 480), seed=0)
    found = tmp_path / "modules.json"
    code = (
        "import json, sys\n"
        "from galleryflow.app.cli import app\n"
        "try:\n"
        f"    app(['batch', 'process', '--input', {str(folder / '*.jpg')!r}, '--preset',"
        f" 'thumbnail', '--output', {str(tmp_path / 'out')!r}])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "roots = sorted({m.split('.')[0] for m in sys.modules})\n"
        f"open({str(found)!r}, 'w').write(json.dumps({{'code': code, 'roots': roots}}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)
    seen = json.loads(found.read_text())
    assert seen["code"] == 0
    assert "prefect" not in seen["roots"]
    assert {"sqlalchemy", "alembic"}.isdisjoint(seen["roots"])  # the worker's, not the CLI's
    assert len(_outputs(tmp_path / "out", ".jpg")) == 1


def test_decodes_made_ahead_are_taken_once_and_only_for_the_same_file(tmp_path):
    from galleryflow.batch.ops import JobSpec, Prefetch
    from galleryflow.batch.presets import BatchParams

    a = gen.jpeg(tmp_path / "a.jpg", (800, 600), seed=1)
    b = gen.jpeg(tmp_path / "b.jpg", (800, 600), seed=2)
    params = BatchParams(width=200)
    spec = JobSpec(job_id="j", operation="resize", params=params, base_dir=str(tmp_path),
                   output_directory=str(tmp_path / "out"))
    ahead = Prefetch()
    ahead.start([a, b], spec, workers=2, limit=2)
    ahead.stop()
    ahead._pool.shutdown(wait=True)
    want = next(iter(ahead._ready))[3]
    made = ahead.take(a, want, params, False)
    assert made is not None
    source, digest = made
    assert source.image.width >= 200
    assert digest == content_digest(a.read_bytes())  # of the bytes decoded
    assert ahead.take(a, want, params, False) is None  # once
    assert ahead.take(b, want, BatchParams(width=200, colour="keep"), False) is None  # other request
    os.utime(b, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed since
    assert ahead.take(b, want, params, False) is None
    ahead.clear()
