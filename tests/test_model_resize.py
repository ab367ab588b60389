"""Stage 6: the model-ready image, on real JPEGs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from galleryflow.db.engine import session_scope
from galleryflow.db.models import Photo
from galleryflow.core.fsutil import FileStamp, sha256_file
from galleryflow.core.ledger import SessionLedger
from galleryflow.intake.samples import SampleSpec, write_sample
from galleryflow.core.settings import Settings
from galleryflow.core.status import RowStatus
from tasks.model_resize import model_resize_chunk, resize_rows, set_dir_name
from tests.fixtures.rows import insert_set, load_photos

pytestmark = pytest.mark.usefixtures("db")


def test_oriented_bounded_jpeg_in_work_dir(gf_home: Settings, tmp_path: Path) -> None:
    gf_home.model_resize.long_edge = 512
    inserted = insert_set(gf_home, tmp_path, "harbour", 2)
    # Replace the first incoming copy with a portrait-stored, orientation-6 photo.
    first = load_photos(inserted.row_ids)[0]
    spec = SampleSpec(name=first.original_name, width=960, height=640, orientation=6,
                      taken_at=datetime(2026, 6, 14, 9, 0))
    write_sample(Path(first.incoming_path), spec)
    with Image.open(first.incoming_path) as stored:
        assert stored.size == (640, 960)  # pixels stored sideways, EXIF says rotate
    with session_scope() as session:  # as intake records a copy: its sha256 and stamp
        row = session.get(Photo, first.id)
        row.sha256 = sha256_file(Path(first.incoming_path))
        row.file_size, row.file_mtime_ns = FileStamp.of(Path(first.incoming_path))

    report = resize_rows(inserted.row_ids, inserted.image_set_id, gf_home)
    assert [o.outcome for o in report.outcomes] == ["ok", "ok"]
    done = load_photos(inserted.row_ids)
    for row in done:
        path = Path(row.ollama_path)
        assert path.parent == gf_home.work_dir / "harbour"
        assert row.sha256[:12] in path.name and path.name.endswith("-512.jpg")
        with Image.open(path) as img:
            assert img.format == "JPEG" and max(img.size) == 512
            assert img.getexif().get(274) is None  # orientation baked in, no tag to apply twice
    with Image.open(done[0].ollama_path) as img:
        assert img.size == (512, 341)  # landscape after orientation
    assert sorted(SessionLedger(gf_home, inserted.image_set_id).created_files()) == sorted(
        Path(r.ollama_path) for r in done
    )
    assert not list((gf_home.work_dir / "harbour").glob(".*.part"))  # atomic: no leftovers


def test_rerun_reuses_existing_images(gf_home: Settings, tmp_path: Path) -> None:
    inserted = insert_set(gf_home, tmp_path, "harbour", 2)
    resize_rows(inserted.row_ids, inserted.image_set_id, gf_home)
    paths = [Path(r.ollama_path) for r in load_photos(inserted.row_ids)]
    stamps = [p.stat().st_mtime_ns for p in paths]

    again = resize_rows(inserted.row_ids, inserted.image_set_id, gf_home)
    assert {o.outcome for o in again.outcomes} == {"skipped"}
    assert [p.stat().st_mtime_ns for p in paths] == stamps

    # A later session that finds the files reuses them and does not claim them for rollback.
    later = resize_rows(inserted.row_ids, inserted.image_set_id + 100, gf_home)
    assert {o.outcome for o in later.outcomes} == {"skipped"}
    assert SessionLedger(gf_home, inserted.image_set_id + 100).created_files() == []


def test_bad_incoming_files_fail_their_row_only(gf_home: Settings, tmp_path: Path) -> None:
    inserted = insert_set(gf_home, tmp_path, "harbour", 3)
    first, second, _ = load_photos(inserted.row_ids)
    Path(first.incoming_path).unlink()
    data = Path(second.incoming_path).read_bytes()
    Path(second.incoming_path).write_bytes(data[: len(data) // 3])  # truncated JPEG

    report = resize_rows(inserted.row_ids, inserted.image_set_id, gf_home)
    outcomes = {o.file: o for o in report.outcomes}
    assert outcomes[first.original_name].outcome == "failed"
    assert "incoming copy missing" in outcomes[first.original_name].message
    assert outcomes[second.original_name].outcome == "failed"
    assert second.original_name in outcomes[second.original_name].message
    a, b, c = load_photos(inserted.row_ids)
    assert a.status == b.status == RowStatus.FAILED and a.error_category == "model_resize"
    assert c.status == RowStatus.SCORED and Path(c.ollama_path).is_file()
    assert not list((gf_home.work_dir / "harbour").glob("*harbour-02*"))


def test_locked_rows_are_left_alone(gf_home: Settings, tmp_path: Path) -> None:
    inserted = insert_set(gf_home, tmp_path, "harbour", 1, status=RowStatus.APPROVED)
    report = resize_rows(inserted.row_ids, inserted.image_set_id, gf_home)
    assert report.outcomes[0].outcome == "skipped"
    assert load_photos(inserted.row_ids)[0].ollama_path is None


def test_set_dir_name_is_one_safe_component() -> None:
    assert set_dir_name("lake-shore_2026") == "lake-shore_2026"
    for key in ("../../etc", "a/b", "..", ".hidden", "x" * 300):
        name = set_dir_name(key)
        assert "/" not in name and ".." not in name and not name.startswith(".")
        assert len(name) <= 121


@pytest.mark.usefixtures("prefect_api")
def test_chunk_task(gf_home: Settings, tmp_path: Path) -> None:
    inserted = insert_set(gf_home, tmp_path, "harbour", 2)
    report = model_resize_chunk(inserted.row_ids, inserted.image_set_id)
    assert report.ok == 2 and report.stage == "model_resize"
