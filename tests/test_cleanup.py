"""Cleanup removes old work files and temporary artifacts, and never an original,
an unpublished incoming copy or a published file."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from galleryflow.db import ImageSet, Photo, session_scope
from galleryflow.db.models import utcnow
from galleryflow.core.settings import Settings
from tasks.cleanup import plan_and_clean

DAY = 86400


def _file(path: Path, age_days: float, data: bytes = b"\xff\xd8 jpeg bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time() - age_days * DAY
    os.utime(path, (past, past))
    return path


def _row(db, session: ImageSet, name: str, status: str, source: Path, incoming: Path | None,
         ollama: Path | None = None, published_days_ago: float | None = None) -> None:
    db.add(Photo(
        set_key=session.set_key, original_name=name, image_set_id=session.id,
        created_session_id=session.id, sha256=name.ljust(64, "0")[:64], status=status,
        source_path=str(source), incoming_path=str(incoming) if incoming else None,
        ollama_path=str(ollama) if ollama else None,
        published_at=utcnow() - timedelta(days=published_days_ago) if published_days_ago else None,
    ))


@pytest.fixture
def studio(db: str, gf_home: Settings, tmp_path: Path) -> dict[str, Path]:
    """A home with a bit of everything, most of it 20 days old."""
    home = gf_home
    originals = tmp_path / "originals" / "alps"
    f = {
        "original_1": _file(originals / "a1.jpg", 400),
        "original_2": _file(originals / "a2.jpg", 400),
        "intake_file": _file(home.home / "intake" / "queue" / "old-set" / "x.jpg", 20),
        "incoming_published": _file(home.incoming_dir / "alps" / "a1.jpg", 20),
        "incoming_waiting": _file(home.incoming_dir / "alps" / "a2.jpg", 20),
        "incoming_partial": _file(home.incoming_dir / "alps" / ".a3.jpg.k2j4.jpg.part", 20),
        "work_published": _file(home.work_dir / "model" / "a1.jpg", 20),
        "work_waiting": _file(home.work_dir / "model" / "a2.jpg", 20),
        "work_orphan": _file(home.work_dir / "model" / "orphan.jpg", 20),
        "work_fresh": _file(home.work_dir / "model" / "fresh.jpg", 1),
        "ledger_done": _file(home.work_dir / ".sessions" / "1" / "files" / "k.txt", 20),
        "ledger_running": _file(home.work_dir / ".sessions" / "2" / "files" / "k.txt", 20),
        "result_old": _file(home.results_dir / "0a1b2c", 45),
        "result_recent": _file(home.results_dir / "3d4e5f", 20),
        "site_file": _file(home.site_dir / "images" / "alps-a1.jpg", 20),
    }
    with session_scope() as db:
        done = ImageSet(set_key="alps", name="alps", source_dir=str(originals), status="completed")
        running = ImageSet(set_key="late", name="late", source_dir=str(tmp_path / "originals" / "late"),
                           status="running")
        db.add_all([done, running])
        db.flush()
        assert (done.id, running.id) == (1, 2)
        _row(db, done, "a1.jpg", "published", f["original_1"], f["incoming_published"],
             f["work_published"], published_days_ago=20)
        _row(db, done, "a2.jpg", "awaiting_review", f["original_2"], f["incoming_waiting"],
             f["work_waiting"])
    return f


def test_cleanup_flow_removes_old_work_and_temporaries_only(studio, gf_home: Settings, prefect_api):
    from flows.cleanup import cleanup

    report = cleanup()
    gone = {k for k, p in studio.items() if not p.exists()}
    assert gone == {"incoming_published", "incoming_partial", "work_published", "work_orphan",
                    "ledger_done", "result_old"}
    assert report.by_kind() == {"incoming": 1, "partial": 1, "work": 2, "ledger": 1, "results": 1}
    assert report.bytes_freed == sum(r.bytes for r in report.removed) > 0
    # Kept: originals, the intake, the unpublished copy, work in use, fresh work, the
    # running session's ledger, recent results and the published site file.
    for key in ("original_1", "original_2", "intake_file", "incoming_waiting", "work_waiting",
                "work_fresh", "ledger_running", "result_recent", "site_file"):
        assert studio[key].exists(), key
    with session_scope() as db:
        paths = {r.original_name: r.ollama_path for r in db.scalars(select(Photo))}
    assert paths == {"a1.jpg": None, "a2.jpg": str(studio["work_waiting"])}
    assert report.cleared_row_paths == 1
    # Nothing left to do: a second run removes nothing and still completes.
    assert cleanup().removed == []


def test_dry_run_lists_without_removing(studio, gf_home: Settings):
    report = plan_and_clean(gf_home, older_than_days=14, results_days=30, dry_run=True)
    assert len(report.removed) == 6
    assert all(p.exists() for p in studio.values())


def test_the_guard_refuses_originals_and_site_files_even_inside_work(db: str, gf_home: Settings,
                                                                   tmp_path: Path):
    # A careless layout: originals copied under work/, the site folder inside work/.
    inside_original = _file(gf_home.work_dir / "originals" / "b1.jpg", 90)
    settings = gf_home.model_copy(update={"publish": gf_home.publish.model_copy(
        update={"site_dir": gf_home.work_dir / "site"})})
    site_file = _file(gf_home.work_dir / "site" / "b1-web.jpg", 90)
    with session_scope() as s:
        session = ImageSet(set_key="b", name="b", source_dir=str(gf_home.work_dir / "originals"),
                           status="completed")
        s.add(session)
        s.flush()
        _row(s, session, "b1.jpg", "rejected", inside_original, None)
    report = plan_and_clean(settings, older_than_days=14, results_days=30)
    assert inside_original.exists() and site_file.exists()
    assert sorted(report.refused) == sorted([str(inside_original), str(site_file)])
    assert report.removed == []
