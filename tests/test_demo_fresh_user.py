"""`galleryflow demo` as a new user runs it: its own process, a home of its own, no
Prefect server configured — and a ``~/.prefect`` that another, newer Prefect has
already migrated.

The embedded Prefect server must keep its database under ``GALLERYFLOW_HOME``: the
user's global ``~/.prefect/prefect.db`` is neither opened, migrated nor created
(galleryflow's Prefect cannot open a database a newer Prefect migrated: "No such
revision", and the demo would die waiting for its server).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

NEWER_PREFECT_REVISION = "ffffffffffff"  # an Alembic head no Prefect we allow knows


def newer_prefect_database(path: Path) -> str:
    """A Prefect database as a newer Prefect leaves it; its sha256."""
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES (?)", (NEWER_PREFECT_REVISION,))
        db.execute("CREATE TABLE flow (id CHAR(36) PRIMARY KEY, name TEXT)")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_publishes_without_touching_the_users_prefect_database(tmp_path: Path) -> None:
    home, gf_home = tmp_path / "user", tmp_path / "gf"
    global_db = home / ".prefect" / "prefect.db"
    before = newer_prefect_database(global_db)
    # A fresh user's environment: none of the test session's Prefect or galleryflow settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "GALLERYFLOW_"))}
    env.update(HOME=str(home), GALLERYFLOW_HOME=str(gf_home), COLUMNS="200")
    galleryflow = Path(sys.executable).with_name("galleryflow")

    try:
        done = subprocess.run([str(galleryflow), "demo", "--approve-all", "--megapixels", "0.3"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    finally:  # the background server the demo left for the next command
        subprocess.run([str(galleryflow), "server", "stop"], env=env, capture_output=True,
                       timeout=60)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "published" in done.stdout and "Run failed" not in done.stdout
    # The user's database: the very same bytes, and no other Prefect database beside it.
    assert hashlib.sha256(global_db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in (home / ".prefect").glob("prefect.db*")) == ["prefect.db"]
    # galleryflow's own embedded server kept its state in galleryflow's home.
    ours = gf_home / "prefect" / "prefect.db"
    assert ours.exists()
    with sqlite3.connect(ours) as db:
        runs = db.execute("SELECT count(*) FROM flow_run").fetchone()[0]
    assert runs >= 1
    site = gf_home / "site"
    assert len(list(site.glob("*.jpg"))) >= 6  # the approved sample photos, published


def test_commands_share_one_background_server_until_it_is_stopped(tmp_path: Path) -> None:
    """A fresh user's second command finds the server the first one left running
    (no start-up wait), `server status` names it, `server stop` ends it. The first
    `run` also leaves a warm process (galleryflow.app.warm), and the second runs in
    it: Prefect's settings and the background server as a cold run has them."""
    import json

    import psutil

    from tests.fixtures.warm import runtime_folder, served, stop_all, wait_warm

    home, gf_home = tmp_path / "user", tmp_path / "gf"
    runtime = runtime_folder(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "GALLERYFLOW_"))}
    env.update(HOME=str(home), GALLERYFLOW_HOME=str(gf_home), COLUMNS="200",
               GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED="true",
               GALLERYFLOW_OLLAMA__HOST="http://127.0.0.1:9",
               GALLERYFLOW_RUNTIME_DIR=str(runtime))
    galleryflow = str(Path(sys.executable).with_name("galleryflow"))
    state_file = gf_home / "prefect" / "local-server.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([galleryflow, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=280)

    from galleryflow.intake.samples import make_set

    first_set = make_set(tmp_path / "sets", "lake-morning", 2, size=(480, 320))
    second_set = make_set(tmp_path / "sets", "lake-evening", 2, size=(480, 320))
    try:
        first = cli("run", str(first_set), "--approve-all", "--location", "Lake Geneva")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        server = json.loads(state_file.read_text())
        assert psutil.pid_exists(server["pid"])
        assert server["url"].removesuffix("/api") in first.stdout

        assert served(runtime, "run") == []  # cold
        wait_warm(runtime, "run", timeout=120)
        second = cli("run", str(second_set), "--approve-all", "--location", "Lake Geneva")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert len(served(runtime, "run")) == 1  # warm
        assert json.loads(state_file.read_text())["pid"] == server["pid"]  # the same server
        assert "Starting temporary server" not in second.stdout + second.stderr
        assert "published" in second.stdout

        # A warm run whose client is SIGKILLed mid-run goes with it (hung up, as with a
        # closing terminal), and `galleryflow recover` finds its process gone.
        _killed_warm_run_is_recovered(cli, env, tmp_path, gf_home, runtime)

        status = cli("server", "status")
        assert server["url"].removesuffix("/api") in status.stdout
        # Both runs are on that one server (its database under GALLERYFLOW_HOME).
        with sqlite3.connect(gf_home / "prefect" / "prefect.db") as db:
            assert db.execute("SELECT count(*) FROM flow_run").fetchone()[0] >= 2
    finally:
        stopped = cli("server", "stop")
        stop_all(runtime)
    assert "Stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not psutil.pid_exists(server["pid"]) or \
        psutil.Process(server["pid"]).status() == psutil.STATUS_ZOMBIE
    assert not state_file.exists()


def _killed_warm_run_is_recovered(cli, env: dict[str, str], tmp_path: Path, gf_home: Path,
                                  runtime: Path) -> None:
    import time

    import psutil
    from sqlalchemy import select

    from galleryflow.db import ImageSet, session_scope
    from galleryflow.intake.samples import make_set
    from tests.fixtures.warm import served

    folder = make_set(tmp_path / "sets", "lake-night", 10, size=(1200, 800))
    run = subprocess.Popen([str(Path(sys.executable).with_name("galleryflow")), "run",
                            str(folder), "--approve-all"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    url = f"sqlite:///{gf_home / 'galleryflow.db'}"

    def status() -> str | None:
        with session_scope(url) as db:
            return db.scalar(select(ImageSet.status).where(ImageSet.set_key == "lake-night"))

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None and status() != "running":
            time.sleep(0.05)
        assert status() == "running" and run.poll() is None, "the warm run never got going"
        line = served(runtime, "run")[-1]
        assert "lake-night" in line
        command = psutil.Process(int(line.split("pid ")[1].split(":")[0]))
        run.kill()
        run.wait(30)
        command.wait(30)  # gone with its client
    finally:
        if run.poll() is None:
            run.kill()
    assert status() == "running"
    recovered = cli("recover")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "its process is gone" in recovered.stdout and "rolled back" in recovered.stdout
    assert status() == "rolled_back"
