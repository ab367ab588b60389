"""Issue 13 as a user hits it: a re-export, `run .`, `run ..`, a symlink out of a set,
a tampered incoming copy, a burst of 24 photos in chunks of 8, the set's location."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from galleryflow.core.fsutil import default_file_mode
from galleryflow.core.ledger import SessionLedger
from galleryflow.db import Photo, session_scope
from galleryflow.intake.samples import SampleSpec, write_sample
from galleryflow.publishing.config import resolve_gallery, resolve_target
from tasks.intake import IntakeItem, content_path, copy_in
from tasks.publish import publish_rows
from tasks.validate import validate_set_dirs
from tests.fixtures.photos import make_set
from tests.fixtures.review import configure, offline
from tests.fixtures.rows import RowSpec, by_id, drafted, insert_set, load_photos
from tests.fixtures.site import assert_site_consistent


@pytest.fixture
def approve_all():
    from flows.gate import add_gate_listener, remove_gate_listener
    from galleryflow.review.answer import auto_approver

    listener = auto_approver(reviewer="pytest")
    add_gate_listener(listener)
    yield listener
    remove_gate_listener(listener)


# ---------------------------------------------------------------- set names, symlinks


def test_run_dot_from_two_folders_makes_two_sets(tmp_path: Path, gf_home, monkeypatch):
    alps, harbour = make_set(tmp_path, "alps", 1, (64, 48)), make_set(tmp_path, "harbour", 1, (64, 48))
    names = []
    for folder in (alps, harbour):
        monkeypatch.chdir(folder)
        names.append(validate_set_dirs([Path(".")], gf_home).sets[0].name)
    assert names == ["alps", "harbour"]  # never one set with the empty name


def test_run_dotdot_stays_inside_incoming(tmp_path: Path, gf_home, db, monkeypatch):
    alps = make_set(tmp_path, "alps", 1, (64, 48))
    (alps / "sub").mkdir()
    monkeypatch.chdir(alps / "sub")
    report = validate_set_dirs([Path("..")], gf_home).sets[0]
    assert report.name == "alps" and report.ok
    result = copy_in(IntakeItem.from_check(report.accepted[0]), gf_home, SessionLedger(gf_home, 1))
    assert Path(result.incoming_path).is_relative_to(gf_home.incoming_dir.resolve() / "alps")


@pytest.mark.parametrize("folder", ["/", "/.hidden-set"])
def test_impossible_set_names_are_refused(folder: str, gf_home):
    report = validate_set_dirs([Path(folder)], gf_home)
    assert not report.ok and "name" in report.sets[0].blocking[0]
    with pytest.raises(Exception, match="outside"):
        content_path(gf_home, "..", "x.jpg", "0" * 64)


def test_a_symlink_out_of_the_set_is_not_followed(tmp_path: Path, gf_home):
    alps = make_set(tmp_path, "alps", 1, (64, 48))
    elsewhere = make_set(tmp_path / "private", "other", 1, (64, 48)) / "other-01.jpg"
    (alps / "borrowed.jpg").symlink_to(elsewhere)
    (alps / "alias.jpg").symlink_to(alps / "alps-01.jpg")  # inside the set: fine
    files = {f.name: f for f in validate_set_dirs([alps], gf_home).sets[0].files}
    assert files["borrowed.jpg"].verdict == "ignored"
    assert "outside the set folder" in files["borrowed.jpg"].messages[0]
    assert files["alias.jpg"].verdict == "accepted"


# ------------------------------------------------------------- publish: bytes, location


def test_publish_refuses_bytes_that_are_not_the_approved_photo(gf_home, db, tmp_path):
    ids = insert_set(gf_home, tmp_path / "sets", "lake", size=(320, 240),
                     per_row=drafted([RowSpec(), RowSpec()])).row_ids
    tampered = Path(by_id(load_photos(settings=gf_home, ids=ids))[ids[0]].incoming_path)
    write_sample(tampered, SampleSpec(name="x", width=320, height=240, seed=4242))
    report = publish_rows(ids, settings=gf_home)
    outcomes = {o.file: o for o in report.outcomes}
    assert outcomes["lake-01.jpg"].outcome == "failed"
    assert "not the photo that was approved" in outcomes["lake-01.jpg"].message
    assert outcomes["lake-02.jpg"].outcome == "ok"
    assert by_id(load_photos(settings=gf_home, ids=ids))[ids[0]].status == "approved"
    assert sorted(p.name for p in gf_home.site_dir.glob("*.jpg")) == ["lake-shore-dawn-02.jpg"]


def test_location_falls_back_to_the_sets_and_site_files_are_world_readable(gf_home, db, tmp_path):
    per_row = [dict(values, location=None) for values in drafted([RowSpec()])]
    ids = insert_set(gf_home, tmp_path / "sets", "lake", size=(320, 240), location="Lake Thun",
                     per_row=per_row).row_ids
    assert [o.outcome for o in publish_rows(ids, settings=gf_home).outcomes] == ["ok"]
    with resolve_gallery(gf_home).connect() as g:
        (row,) = g.rows()
    assert row["Location"] == "Lake Thun"
    for path in (gf_home.site_dir / "lake-shore-dawn-01.jpg",
                 gf_home.site_dir / "thumbs" / "lake-shore-dawn-01.jpg"):
        mode = path.stat().st_mode & 0o777
        assert mode == default_file_mode() and mode & 0o004, oct(mode)  # 0644 under umask 022


# --------------------------------------------------------------- whole runs (Prefect)


@pytest.mark.integration
def test_a_reexport_is_a_new_photo_and_the_published_one_keeps_its_bytes(
        prefect_api, tmp_path: Path, gf_home, monkeypatch, approve_all):
    from flows.process_sets import process_sets

    settings = offline(monkeypatch)
    folder = make_set(tmp_path / "sets", "alps", 2, (160, 120))
    first = process_sets([str(folder)])
    assert first.publish and len(first.publish.published) == 2
    with session_scope() as db:
        old = db.scalars(select(Photo).where(Photo.original_name == "alps-01.jpg")).one()
        old_id, old_sha, old_url = old.id, old.sha256, old.public_url
    site_file = settings.site_dir / Path(old_url).name
    before = site_file.read_bytes()

    # The photographer re-exports alps-01 (other pixels, same name) and runs again.
    write_sample(folder / "alps-01.jpg", SampleSpec(name="x", width=160, height=120, seed=31337,
                                                    taken_at=datetime(2026, 6, 14, 9, 0)))
    second = process_sets([str(folder)])
    assert second.sets[0].changed == ["alps-01.jpg"]  # said, never silent
    with session_scope() as db:
        versions = list(db.scalars(select(Photo).where(Photo.original_name == "alps-01.jpg")
                                   .order_by(Photo.id)))
    assert [v.id for v in versions][0] == old_id and len(versions) == 2
    assert (versions[0].sha256, versions[0].status) == (old_sha, "published")
    assert versions[1].sha256 != old_sha and versions[1].status == "published"
    assert versions[1].web_file_name != versions[0].web_file_name
    assert site_file.read_bytes() == before  # the old photo on the site is untouched
    assert Path(versions[0].incoming_path).is_file()  # and its original's copy is kept
    assert_site_consistent(settings, settings.site_dir, resolve_gallery(settings),
                           resolve_target(settings), tmp_path / "scratch")


@pytest.mark.integration
def test_a_burst_of_24_in_chunks_of_8_never_shares_a_name(
        prefect_api, tmp_path: Path, gf_home, monkeypatch, approve_all, stub):
    """One burst, one minute, a model that names every photo alike: three chunks draft at
    the same time (the first request of each is held until all three are in flight), so
    every chunk reads the name as free and then races for it; the reservations decide.

    Offline drafts are one chunk at a time per process (tasks.captioning), so the race
    within one run is the model's: chunks that hold ``ollama`` slots side by side."""
    import threading

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.process_sets import process_sets
    from tests.fixtures.ollama import point_at
    from tests.services.ollama_stub import Good, Slow

    # Duplicate-looking captions of a burst may be blocked; the rule that holds such a
    # set back (tests/test_zero_blocked.py) is relaxed: this is about names.
    settings = configure(monkeypatch, GALLERYFLOW_CHUNK_SIZE="8",
                         GALLERYFLOW_OLLAMA__CHUNK_SIZE="8",
                         GALLERYFLOW_OLLAMA__CONCURRENCY_LIMIT="3",
                         GALLERYFLOW_PUBLISH__FULL_LONG_EDGE="96",
                         GALLERYFLOW_PUBLISH__THUMB_LONG_EDGE="32",
                         GALLERYFLOW_PUBLISH__ALLOW_BLOCKED_SETS="true")
    point_at(settings, stub)

    def drop_limit() -> None:  # created afresh with 3 slots; the next test's own again
        with get_client(sync_client=True) as client:
            try:
                client.delete_global_concurrency_limit_by_name("ollama")
            except ObjectNotFound:
                pass

    together = threading.Barrier(3, timeout=4)  # under the client's 5 s timeout
    first_three = iter(range(3))
    lock = threading.Lock()
    name = Good(file_name="green-hills-morning-burst")

    def answer(call):
        with lock:
            held = next(first_three, None) is not None
        if held:
            together.wait()  # BrokenBarrierError (a 500, then a failed run) if not 3 at once
        return Slow(0.01, name)

    stub.default = answer
    folder = tmp_path / "sets" / "burst"
    # 24: three chunks of 8 racing for one name is the race (the flow runs four tasks at
    # a time); more photos only add task runs (the suite's time), not kinds of collision.
    for i in range(24):
        write_sample(folder / f"burst-{i:03d}.jpg", SampleSpec(
            name=f"burst-{i:03d}.jpg", width=96, height=64, seed=i,
            taken_at=datetime(2026, 6, 14, 9, 0, i % 60)))
    drop_limit()
    try:
        summary = process_sets([str(folder)])
    finally:
        drop_limit()
    assert summary.sets[0].status == "completed"
    assert stub.max_in_flight == 3
    with session_scope() as db:
        rows = list(db.scalars(select(Photo)))
        names = [r.web_file_name.lower() for r in rows if r.web_file_name]
        renamed = [r for r in rows if any(i["code"] == "file_name_made_unique"
                                          for i in (r.proof.issues or []))]
    assert len(names) == 24 and len(set(names)) == 24
    assert names.count("green-hills-morning-burst.jpg") == 1
    # Every other photo was told, in its proof, that it got a variant: whether its chunk
    # saw the name taken before reserving or lost the reservation ("meanwhile").
    assert len(renamed) == 23
    state = assert_site_consistent(settings, settings.site_dir, resolve_gallery(settings),
                                   resolve_target(settings), tmp_path / "scratch")
    assert len(state.published) == len(summary.publish.published) > 0


@pytest.mark.integration
def test_a_rollback_that_raises_is_finished_by_the_next_run(prefect_api, tmp_path: Path, gf_home,
                                                           monkeypatch):
    import flows.process_sets as process_module
    import tasks.rollback as rollback_module
    from flows.process_sets import SetsFailed, process_sets
    from flows.review_publish import _waiting_rows
    from galleryflow.core.stages import StageError
    from galleryflow.db import ImageSet
    from tasks.recovery import recover

    settings = offline(monkeypatch)
    folder = make_set(tmp_path / "sets", "doomed", 2, (96, 64))

    def disk_gone(row_ids, image_set_id, settings):
        raise StageError("disk went away")

    def broken_rollback(*args, **kwargs):
        raise OSError("incoming/ went read-only")

    monkeypatch.setattr(process_module, "LATER_STAGES", [("fail", disk_gone)])
    real_rollback = rollback_module.rollback_session
    monkeypatch.setattr(rollback_module, "rollback_session", broken_rollback)
    with pytest.raises(SetsFailed, match="disk went away"):
        process_sets([str(folder)])
    with session_scope() as db:
        (image_set,) = db.scalars(select(ImageSet))
        assert image_set.status == "rollback_failed"  # never called rolled back
        assert "rollback failed" in image_set.error and "disk went away" in image_set.error
        assert len(list(db.scalars(select(Photo)))) == 2  # not undone yet …
    assert SessionLedger(settings, image_set.id).root.is_dir()  # … and its ledger kept
    assert _waiting_rows(None) == []  # shown to nobody

    monkeypatch.setattr(rollback_module, "rollback_session", real_rollback)
    report = recover()
    assert [(r.set, r.outcome) for r in report.sessions] == [("doomed", "rolled_back")]
    with session_scope() as db:
        assert [s.status for s in db.scalars(select(ImageSet))] == ["rolled_back"]
        assert list(db.scalars(select(Photo))) == []
    assert not SessionLedger(settings, image_set.id).root.exists()
    assert not any(p.is_file() for p in settings.incoming_dir.rglob("*"))


def test_galleryflow_publish_finishes_approved_rows_in_this_process(gf_home, db, tmp_path):
    """No Prefect server, no deployment: the command publishes what waits, and only that."""
    from typer.testing import CliRunner

    from galleryflow.app.cli import app

    inserted = insert_set(gf_home, tmp_path / "sets", "lake", size=(320, 240),
                          per_row=drafted([RowSpec(), RowSpec(), RowSpec(status="rejected")]))
    result = CliRunner().invoke(app, ["publish", "lake"])
    assert result.exit_code == 0, result.output
    statuses = {r.original_name: r.status for r in by_id(load_photos(settings=gf_home, ids=inserted.row_ids)).values()}
    assert statuses == {"lake-01.jpg": "published", "lake-02.jpg": "published",
                        "lake-03.jpg": "rejected"}
    assert_site_consistent(gf_home, gf_home.site_dir, resolve_gallery(gf_home),
                           resolve_target(gf_home), tmp_path / "scratch")
    again = CliRunner().invoke(app, ["publish"])
    assert again.exit_code == 0 and "Nothing to publish" in again.output
