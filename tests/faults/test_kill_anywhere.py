"""Fault injection: SIGKILL of the whole process group at seeded random points of
stages 2–9, then resume; the site must hold only approved bytes, each name once.

Each *life* is one process group (tests/faults/child.py): ``galleryflow recover``,
``galleryflow publish``, ``galleryflow run --here --approve-all`` on two sets, with
the embedded Prefect server, an OpenSSH SFTP target and a MariaDB gallery table.
Between lives the photographer keeps working: a new photo lands in a set, now and
then one is re-exported with other pixels under its old name. A life with a point
armed is killed the N-th time the pipeline passes it (before or after the call);
lives go on until ``GALLERYFLOW_FAULT_KILLS`` (default 8: each run's seed differs, so
runs add up to every point; more per run only lengthens the suite) kills happened, then one
life runs undisturbed. Then: every published file is what its approved photo's
sha256 makes, no name twice (case-folded), gallery rows = files = rows marked
published, no temporary file, no session left running, no ledger left.

The seed is printed; ``GALLERYFLOW_FAULT_SEED=N`` replays a run.
Run alone: ``pytest -m faults``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from blocks.gallery_db import GalleryDatabase
from blocks.targets import SftpTarget
from galleryflow.core.settings import PublishSettings, Settings
from galleryflow.db import Photo, session_scope
from galleryflow.intake.samples import SampleSpec, write_sample
from tests.faults.child import POINTS
from tests.fixtures.services import sftp_target_fields
from tests.fixtures.site import assert_site_consistent

pytestmark = [pytest.mark.faults, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("GALLERYFLOW_FAULT_KILLS", "8"))
# Calls of each point per life are few (3 photos per chunk, a new photo or two per
# life): small hit numbers keep most armed lives ending in a kill.
MAX_HIT = {"2:copy": 2, "2:open-session": 3, "3:exif": 2, "9:upload": 3}


def _photo(folder: Path, name: str, seed: int, minute: int) -> None:
    write_sample(folder / name, SampleSpec(name=name, width=120, height=80, seed=seed,
                                           taken_at=datetime(2026, 6, 14, 9, 0)
                                           + timedelta(minutes=minute)))


def _env(home: Path, gallery_url: str, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API_URL", "PREFECT_SERVER_DATABASE", "PREFECT_LOCAL_STORAGE",
                                "GALLERYFLOW_"))}
    env.update({
        "PYTHONPATH": str(REPO),
        "GALLERYFLOW_HOME": str(home),
        "GALLERYFLOW_CHUNK_SIZE": "3",
        "GALLERYFLOW_OLLAMA__CHUNK_SIZE": "3",
        "GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED": "true",
        "GALLERYFLOW_OLLAMA__HOST": "http://127.0.0.1:9",  # nothing there: offline captioner
        "GALLERYFLOW_OLLAMA__CONNECT_TIMEOUT_SECONDS": "1",
        # A killed chunk's concurrency slot is never given back by the embedded server:
        # enough slots that leaked ones never block the next life.
        "GALLERYFLOW_SCORING__CONCURRENCY": "100",
        "GALLERYFLOW_PUBLISH__CONCURRENCY": "100",
        "GALLERYFLOW_OLLAMA__CONCURRENCY_LIMIT": "100",
        "GALLERYFLOW_PUBLISH__TARGET": "sftp",
        "GALLERYFLOW_PUBLISH__TARGET_BLOCK": "fault-site",
        "GALLERYFLOW_PUBLISH__GALLERY_URL": gallery_url,
        "GALLERYFLOW_PUBLISH__FULL_LONG_EDGE": "120",
        "GALLERYFLOW_PUBLISH__THUMB_LONG_EDGE": "40",
        "GALLERYFLOW_PUBLISH__RETRIES": "0",
        "GALLERYFLOW_REVIEW__POLL_INTERVAL_SECONDS": "0.5",
        # Each life's Prefect server is the shared one or the life's own temporary one
        # (killed with it), never a background server that would outlive the kill.
        "GALLERYFLOW_OPS__LOCAL_SERVER": "false",
        # This suite is about crashes, not the zero-blocked rule (tests/test_zero_blocked.py):
        # re-exports and look-alike offline drafts leave blocked rows that would hold a set
        # back, and the last life must publish every approved row.
        "GALLERYFLOW_PUBLISH__ALLOW_BLOCKED_SETS": "true",
    })
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _life(tmp_path: Path, n: int, env: dict[str, str], cfg: dict) -> tuple[int, str]:
    path = tmp_path / f"life-{n}.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "tests.faults.child", str(path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=240,
                          start_new_session=True)  # its own process group: killpg hits only it
    return proc.returncode, proc.stdout[-8000:] + proc.stderr[-3000:]


def _remote_files(sftp_server, base: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with sftp_server.client() as sftp:
        for folder in ("", "thumbs"):
            path = f"{base}/{folder}".rstrip("/")
            try:
                names = sftp.listdir(path)
            except FileNotFoundError:
                continue
            for name in names:
                full = f"{path}/{name}"
                if folder == "" and name == "thumbs":
                    continue
                with sftp.open(full, "rb") as handle:
                    files[f"{folder}/{name}".lstrip("/")] = handle.read()
    return files


@pytest.fixture
def api_url(request) -> str | None:
    """The Prefect API the lives use. Default: one real server shared by all lives, so a
    life costs seconds (the suite stays within its budget). With
    ``GALLERYFLOW_FAULT_SERVER=embedded`` each life starts galleryflow's embedded
    server, which the kill takes down with the rest of the process group."""
    if os.environ.get("GALLERYFLOW_FAULT_SERVER", "shared") == "embedded":
        return None
    return request.getfixturevalue("prefect_server_url")


def test_sigkill_at_random_points_then_resume(tmp_path: Path, mariadb_url: str, sftp_server,
                                             api_url: str | None, capsys) -> None:
    seed = int(os.environ.get("GALLERYFLOW_FAULT_SEED", random.randrange(1_000_000)))
    with capsys.disabled():
        print(f"\nfault injection: seed {seed} (replay with GALLERYFLOW_FAULT_SEED={seed})")
    rng = random.Random(seed)
    home, sets = tmp_path / "home", [tmp_path / "sets" / "alps", tmp_path / "sets" / "harbour"]
    for i, folder in enumerate(sets):
        for k in range(3):
            _photo(folder, f"{folder.name}-{k:02d}.jpg", seed=100 * i + k, minute=k)
    base = sftp_server.fresh_dir()
    target = sftp_target_fields(sftp_server, base)
    env = _env(home, mariadb_url, api_url)
    kills: list[str] = []
    lives = 0
    started = time.monotonic()
    while len(kills) < KILLS and lives < 3 * KILLS:
        lives += 1
        folder = rng.choice(sets)
        count = len(list(folder.glob("*.jpg")))
        _photo(folder, f"{folder.name}-{count:02d}.jpg", seed=rng.randrange(10**6), minute=count)
        if rng.random() < 0.3:  # a re-export: other pixels under a known name
            old = rng.choice(sorted(folder.glob("*.jpg")))
            _photo(folder, old.name, seed=rng.randrange(10**6), minute=int(old.stem[-2:]))
        point = rng.choice(sorted(POINTS))
        cfg = dict(sets=[str(s) for s in sets], target=target, point=point,
                   hit=rng.randint(1, MAX_HIT.get(point, 1)), when=rng.choice(["before", "after"]))
        rc, output = _life(tmp_path, lives, env, cfg)
        assert rc in (0, -9), f"life {lives} ({point}) ended {rc}:\n{output}"
        if rc == -9:
            kills.append(f"{point}#{cfg['hit']}/{cfg['when']}")
    with capsys.disabled():
        print(f"fault injection: {len(kills)} kills in {lives} lives "
              f"({time.monotonic() - started:.0f} s): {', '.join(kills)}")
    assert len(kills) >= KILLS, f"only {len(kills)} kill points reached in {lives} lives"

    rc, output = _life(tmp_path, lives + 1, env, dict(sets=[str(s) for s in sets], target=target,
                                                      point=None))
    assert rc == 0, output
    settings = Settings(home=home, publish=PublishSettings(full_long_edge=120, thumb_long_edge=40))
    state = assert_site_consistent(settings, _remote_files(sftp_server, base),
                                   GalleryDatabase(url=mariadb_url), SftpTarget(**target),
                                   tmp_path / "scratch")
    with session_scope(settings.db_url) as db:
        waiting = [r.original_name for r in db.scalars(select(Photo).where(Photo.status == "approved"))]
    assert waiting == [], f"approved rows the last life did not publish: {waiting}"
    assert state.published, "nothing was published at all"


def _settings(home: Path) -> Settings:
    return Settings(home=home, publish=PublishSettings(full_long_edge=120, thumb_long_edge=40))


def test_a_kill_during_intake_or_drafting_is_recovered(tmp_path: Path, mariadb_url: str,
                                                      sftp_server, api_url: str | None,
                                                      monkeypatch) -> None:
    """Killed while copying, then while drafting: nothing of the dead session is shown
    for review, and `galleryflow recover` rolls it back without a trace."""
    from flows.review_publish import _waiting_rows
    from galleryflow.db import ImageSet
    from tests.fixtures.site import temp_files

    home, folder = tmp_path / "home", tmp_path / "sets" / "alps"
    for k in range(4):
        _photo(folder, f"alps-{k:02d}.jpg", seed=k, minute=k)
    target = sftp_target_fields(sftp_server, sftp_server.fresh_dir())
    env = _env(home, mariadb_url, api_url)
    settings = _settings(home)
    run = [["run", "--here", "--approve-all", str(folder)]]

    rc, output = _life(tmp_path, 1, env, dict(sets=[], target=target, commands=run,
                                              point="2:fsync", hit=2, when="before"))
    assert rc == -9, output
    with session_scope(settings.db_url) as db:
        assert [s.status for s in db.scalars(select(ImageSet))] == ["running"]
    assert temp_files(settings.incoming_dir), "the copy cut short is left as a temporary"

    rc, output = _life(tmp_path, 2, env, dict(sets=[], target=target, commands=[["recover"]] + run,
                                              point="7:drafted", hit=2, when="after"))
    # Killed once a second row's draft is committed ("7:drafted"; not "7:draft", the
    # write before its commit: the two chunks draft side by side, and a kill after
    # one chunk's write could land before the other's commit, leaving no draft).
    assert rc == -9, output
    assert "its process is gone" in output and "rolled back" in output
    with session_scope(settings.db_url) as db:
        statuses = [s.status for s in db.scalars(select(ImageSet).order_by(ImageSet.id))]
        drafted = [r.id for r in db.scalars(select(Photo).where(Photo.status == "awaiting_review"))]
    assert statuses == ["rolled_back", "running"] and drafted  # drafts of a dead session …
    from galleryflow.core.settings import get_settings, reset_settings

    monkeypatch.setenv("GALLERYFLOW_HOME", str(home))
    reset_settings()
    assert get_settings().home == home
    assert _waiting_rows(None) == []  # … are shown to nobody

    rc, output = _life(tmp_path, 3, env, dict(sets=[], target=target, commands=[["recover"]],
                                              point=None))
    assert rc == 0, output
    with session_scope(settings.db_url) as db:
        assert [s.status for s in db.scalars(select(ImageSet))] == ["rolled_back", "rolled_back"]
        assert list(db.scalars(select(Photo))) == []
    assert temp_files(settings.incoming_dir, settings.work_dir) == []
    assert not any((settings.work_dir / ".sessions").glob("*"))
    assert not any(p.is_file() for p in settings.incoming_dir.rglob("*"))


def test_a_kill_inside_publish_is_finished_by_galleryflow_publish(
        tmp_path: Path, mariadb_url: str, sftp_server, api_url: str | None) -> None:
    home, folder = tmp_path / "home", tmp_path / "sets" / "harbour"
    for k in range(3):
        _photo(folder, f"harbour-{k:02d}.jpg", seed=50 + k, minute=k)
    base = sftp_server.fresh_dir()
    target = sftp_target_fields(sftp_server, base)
    env = _env(home, mariadb_url, api_url)
    run = ["run", "--here", "--approve-all", str(folder)]
    rc, output = _life(tmp_path, 1, env, dict(sets=[], target=target, commands=[run],
                                              point="9:mark", hit=1, when="before"))
    assert rc == -9, output
    settings = _settings(home)
    with session_scope(settings.db_url) as db:
        approved = [r.original_name for r in db.scalars(select(Photo).where(Photo.status == "approved"))]
    assert approved  # on the server and in the gallery, not yet marked

    rc, output = _life(tmp_path, 2, env, dict(sets=[], target=target, point=None,
                                              commands=[run, ["publish", "harbour"]]))
    assert rc == 0, output
    assert "not published yet" in output and "galleryflow publish harbour" in output
    state = assert_site_consistent(settings, _remote_files(sftp_server, base),
                                   GalleryDatabase(url=mariadb_url), SftpTarget(**target),
                                   tmp_path / "scratch")
    assert sorted(r.original_name for r in state.published.values()) == sorted(approved)
