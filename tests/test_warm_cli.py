"""The warm process for batch commands (galleryflow.app.warm), with real processes: the
first `galleryflow batch …` starts cold and leaves it behind; the next runs in it, in
the caller's own environment, folder and terminal; its exit status, Ctrl-C and a
client killed outright reach the command as they would a cold one; the job outlives
its command either way; a warm process that is gone, unsafe or unwanted is never used."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from galleryflow.app import warm
from galleryflow.batch.status import get_job, list_jobs
from tests.fixtures import photos as gen
from tests.fixtures.batch import end_command, wait_until_running
from tests.fixtures.warm import runtime_folder, served, services, stop_all, wait_warm

pytestmark = [pytest.mark.usefixtures("gf_home"),
              pytest.mark.skipif(not hasattr(socket, "send_fds") or sys.platform == "darwin",
                                 reason="the warm process is for Linux")]

GALLERYFLOW = str(Path(sys.executable).with_name("galleryflow"))  # the console script


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private runtime folder, warm processes on (for 1 minute), and every warm
    process started in that folder stopped afterwards."""
    folder = runtime_folder(tmp_path)
    monkeypatch.setenv("GALLERYFLOW_RUNTIME_DIR", str(folder))
    monkeypatch.setenv("GALLERYFLOW_OPS__WARM_MINUTES", "1")
    monkeypatch.setenv("GALLERYFLOW_BATCH__RUNNER", "local")
    yield folder
    stop_all(folder)


_services, _served, _wait_warm = services, served, wait_warm


def _gf(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([GALLERYFLOW, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=180)
    done.stdout, done.stderr = (" ".join(x.split()) for x in (done.stdout, done.stderr))
    return done


def _photos(folder: Path, n: int, size=(640, 480)) -> None:
    for i in range(n):
        gen.jpeg(folder / f"p{i:02d}.jpg", size, seed=i)


def test_the_first_batch_command_leaves_a_warm_process_the_next_ones_run_in(tmp_path, runtime):
    _photos(tmp_path / "in", 3)
    first = _gf("batch", "process", "--input", str(tmp_path / "in" / "*.jpg"),
                "--preset", "thumbnail", "--output", str(tmp_path / "cold"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert _served(runtime) == []  # cold: there was none yet
    path = _wait_warm(runtime)
    assert path.stat().st_mode & 0o777 == 0o600

    # Relative paths, another home: the command's own folder and environment.
    other_home = tmp_path / "other-home"
    second = _gf("batch", "process", "--input", "in/*.jpg", "--preset", "thumbnail",
                 "--output", "warm-out", cwd=tmp_path, env={"GALLERYFLOW_HOME": str(other_home)})
    assert second.returncode == 0, second.stdout + second.stderr
    assert "completed, 3 completed, 0 failed of 3" in second.stdout  # its report, on its stdout
    assert len(list((tmp_path / "warm-out").glob("*.jpg"))) == 3
    assert len(_served(runtime)) == 1
    assert (other_home / "galleryflow.db").is_file()  # recorded in the home it was given
    assert [j.output_directory for j in list_jobs()] == [str(tmp_path / "cold")]

    status = _gf("batch", "status", "--json", env={"GALLERYFLOW_HOME": str(other_home)})
    assert status.returncode == 0 and str(tmp_path / "warm-out") in status.stdout
    assert len(_served(runtime)) == 2

    # The exit status comes back: refused (2), on stderr, nothing written.
    refused = _gf("batch", "process", "--input", str(tmp_path / "nowhere" / "*.jpg"),
                  "--preset", "thumbnail", "--output", str(tmp_path / "r"))
    assert refused.returncode == 2 and "does not exist" in refused.stderr
    assert not (tmp_path / "r").exists()
    assert len(_served(runtime)) == 3
    # Not a batch command: never handed over.
    assert _gf("status", "--help").returncode == 0 and len(_served(runtime)) == 3


def test_ctrl_c_and_a_killed_client_reach_the_command_and_the_job_runs_on(tmp_path, runtime):
    _photos(tmp_path / "in", 6, size=(1200, 900))
    assert _gf("batch", "status").returncode == 0  # cold; leaves the warm process
    _wait_warm(runtime)
    slow = {**os.environ, "GALLERYFLOW_BATCH__WORKERS": "1"}
    jobs_done = []
    for how in ("ctrl-c", "sigkill"):
        cli = subprocess.Popen([GALLERYFLOW, "batch", "process", "--input",
                                str(tmp_path / "in" / "*.jpg"), "--operation", "convert",
                                "--param", "format=png", "--output", str(tmp_path / how)],
                               env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
        worker = command = None
        try:
            (running,) = wait_until_running(cli, completed=1)
            (service,) = _services(runtime)
            (command,) = service.children()  # the warm process's child that runs the command
            (worker,) = command.children()  # the job's worker, in a session of its own
            assert os.getsid(worker.pid) == worker.pid
            if how == "ctrl-c":
                cli.send_signal(signal.SIGINT)
                out, err = cli.communicate(timeout=60)
                assert cli.returncode == 130, out + err
                assert b"the job keeps running" in err
            else:
                cli.kill()  # no word to anyone: the warm process sees its client go
                cli.wait(30)
            command.wait(30)  # the command ended with its client …
            deadline = time.monotonic() + 120
            while (time.monotonic() < deadline
                   and get_job(running.id, files=False).status == "running"):
                time.sleep(0.1)
            worker.wait(30)
        finally:
            end_command(cli, [worker, command])
        jobs_done.append(get_job(running.id))
    for job in jobs_done:  # … and the job ran on to its end
        assert (job.status, job.completed, job.total) == ("completed", 6, 6)


def test_no_warm_process_is_used_when_gone_unsafe_or_unwanted(tmp_path, runtime, monkeypatch):
    _photos(tmp_path / "in", 1)
    assert _gf("batch", "status").returncode == 0
    path = _wait_warm(runtime)
    (service,) = _services(runtime)

    # Gone: killed outright, its socket left behind. The command starts cold, works,
    # and leaves a new warm process.
    service.kill()
    service.wait(10)
    assert path.exists() and not warm.answers(path)
    done = _gf("batch", "process", "--input", str(tmp_path / "in" / "*.jpg"),
               "--preset", "thumbnail", "--output", str(tmp_path / "a"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _served(runtime) == []
    _wait_warm(runtime)

    # Unwanted: warm_minutes 0 in the environment starts cold, and the warm process
    # that is there stops once a command tells it its settings say 0.
    assert _gf("batch", "status", env={"GALLERYFLOW_OPS__WARM_MINUTES": "0"}).returncode == 0
    assert _served(runtime) == []
    monkeypatch.delenv("GALLERYFLOW_OPS__WARM_MINUTES")  # the file's word, then
    monkeypatch.setenv("GALLERYFLOW_CONFIG", str(tmp_path / "galleryflow.toml"))
    (tmp_path / "galleryflow.toml").write_text("[ops]\nwarm_minutes = 0\n")
    assert _gf("batch", "status").returncode == 0
    assert len(_served(runtime)) == 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_services(runtime) or path.exists()):
        time.sleep(0.1)
    assert not _services(runtime) and not path.exists()
    assert _gf("batch", "status").returncode == 0  # cold, and starts none
    time.sleep(1)
    assert not _services(runtime)

    # Unsafe: a runtime folder others may write to is not used at all.
    runtime.chmod(0o755)
    assert warm.runtime_dir() is None and warm.socket_path("batch", create=True) is None
    runtime.chmod(0o700)
    assert warm.runtime_dir() == runtime


def test_an_idle_warm_process_stops_and_code_changes_get_a_new_one(tmp_path, runtime):
    path = runtime / "idle.sock"
    service = subprocess.Popen([sys.executable, "-m", "galleryflow.app.warm", "serve", "batch",
                                str(path), "0.02"], stdout=subprocess.PIPE, text=True)
    out, _ = service.communicate(timeout=120)  # 1.2 s without a command
    assert service.returncode == 0 and "idle for" in out
    assert not path.exists()

    package = tmp_path / "pkg" / "galleryflow"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "mod.py").write_text("x = 1\n")
    before = warm.code_fingerprint(package)
    assert warm.code_fingerprint(package) == before
    (package / "sub" / "mod.py").write_text("x = 22\n")
    assert warm.code_fingerprint(package) != before


def test_a_warm_process_that_never_answers_is_stopped_and_the_command_starts_cold(
        tmp_path, runtime, monkeypatch):
    path = runtime / "stuck.sock"
    service = subprocess.Popen([sys.executable, "-m", "galleryflow.app.warm", "serve", "batch",
                                str(path), "1"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not warm.answers(path):
            time.sleep(0.1)
        service.send_signal(signal.SIGSTOP)  # takes the connection, never forks for it
        monkeypatch.setattr(warm, "ANSWER_SECONDS", 1.0)
        assert warm.run_warm(["batch", "status"], path) is None  # nothing ran: start cold
        assert service.wait(10) == -signal.SIGKILL and not path.exists()
    finally:
        if service.poll() is None:
            service.kill()


def test_a_runtime_folder_too_deep_for_a_socket_address_still_gets_its_warm_process(
        tmp_path, monkeypatch):
    """A socket's address holds ~107 bytes: a deep runtime folder is reached through its
    descriptor (/proc/self/fd/N/…), for the service's bind and every client's connect."""
    folder = runtime_folder(tmp_path / ("deep-" * 12) / ("er-" * 12))
    assert len(str(folder / "batch-0123456789abcdef0123.sock")) > 108
    monkeypatch.setenv("GALLERYFLOW_RUNTIME_DIR", str(folder))
    monkeypatch.setenv("GALLERYFLOW_OPS__WARM_MINUTES", "1")
    try:
        assert _gf("batch", "status").returncode == 0
        path = _wait_warm(folder)
        assert path.parent == folder and path.stat().st_mode & 0o777 == 0o600
        again = _gf("batch", "status")
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(_served(folder, "batch status")) == 1  # the second ran warm
    finally:
        stop_all(folder)


def test_a_run_service_loads_what_each_run_would_load_again_and_starts_no_thread(tmp_path):
    """The run kind's preload, in a process of its own as the service does it: what each
    forked run would otherwise load on its way (the guardrails' gazetteer and noun lemma
    table, Prefect's task engine, the fastapi encoders) is there, and no thread was
    started (a fork keeps only the forking one; _preload raises if one was). What it
    loaded is frozen: a forked child's full collection scans only its own objects."""
    script = (
        "import gc, os, sys\n"
        "from galleryflow.app.warm import _preload\n"
        "_preload('run')\n"
        "frozen = gc.get_freeze_count()\n"
        "assert frozen > 200_000, frozen\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    gc.collect()\n"
        "    os._exit(0 if len(gc.get_objects()) < frozen // 10 else 1)\n"
        "assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, 'a child scans them'\n"
        "from galleryflow.captioning import text, timeplace\n"
        "assert text._noun_table.cache_info().currsize == 1\n"
        "assert timeplace._loaded.cache_info().currsize == 1\n"
        "assert 'index' in vars(timeplace._loaded())  # the name index, unpickled\n"
        "missing = [m for m in ('prefect.task_engine', 'fastapi.encoders', 'emoji',\n"
        "                       'sqlalchemy.dialects.mysql') if m not in sys.modules]\n"
        "assert not missing, missing\n"
        "print('preloaded')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GALLERYFLOW_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preloaded" in done.stdout
