"""Stages 2–4 as plain functions: verified atomic copies, EXIF, row refresh rules."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from galleryflow.db import ImageSet, Photo, session_scope
from galleryflow.core.fsutil import HASHES, FileStamp, copy_verified
from galleryflow.core.ledger import SessionLedger
from galleryflow.intake.samples import SampleSpec, write_sample
from galleryflow.core.settings import Settings
from galleryflow.core.status import RowStatus
from tasks.exif import read_exif
from tasks.intake import IntakeItem, copy_in, known_copies
from tasks.review_rows import upsert_rows
from tasks.validate import validate_set_dirs


def _items(folder: Path, settings: Settings) -> list[IntakeItem]:
    report = validate_set_dirs([folder], settings)
    return [IntakeItem.from_check(c) for c in report.sets[0].accepted]


def _session(name: str) -> int:
    with session_scope() as db:
        image_set = ImageSet(set_key=name, name=name, source_dir="/x")
        db.add(image_set)
        db.flush()
        return image_set.id


def test_copy_is_verified_and_original_untouched(sample_set: Path, gf_home: Settings, db):
    src = sample_set / "lake-shore-01.jpg"
    before = (src.read_bytes(), src.stat().st_mtime_ns, src.stat().st_mode)
    src.chmod(0o444)  # a read-only original
    result = copy_in(_items(sample_set, gf_home)[0], gf_home, SessionLedger(gf_home, 1))
    dest = Path(result.incoming_path)
    # content-addressed: incoming/<set>/<sha256[:16]>/<name>, never overwritten
    assert dest == (gf_home.incoming_dir / "lake-shore" / result.sha256[:16]
                    / "lake-shore-01.jpg").resolve()
    assert dest.read_bytes() == before[0]
    assert result.sha256 == hashlib.sha256(before[0]).hexdigest() and result.copied
    assert src.read_bytes() == before[0] and src.stat().st_mtime_ns == before[1]
    assert os.access(dest, os.W_OK)
    again = copy_in(_items(sample_set, gf_home)[0], gf_home, SessionLedger(gf_home, 2))
    assert not again.copied and again.sha256 == result.sha256


def test_interrupted_copy_leaves_no_partial_file(sample_set: Path, tmp_path: Path, monkeypatch):
    import galleryflow.core.fsutil as fsutil

    dest = tmp_path / "incoming" / "a.jpg"
    real_fsync = fsutil.os.fsync

    def crash(fd):
        # Simulate power loss/ENOSPC after the bytes were written but before the rename.
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        copy_verified(sample_set / "lake-shore-01.jpg", dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the temporary file is gone too

    def short_copy(fd):
        # The file system kept only part of what was written (a short copy).
        os.ftruncate(fd, 1000)
        real_fsync(fd)

    monkeypatch.setattr(fsutil.os, "fsync", short_copy)
    with pytest.raises(IOError, match="verification failed"):
        copy_verified(sample_set / "lake-shore-01.jpg", dest)
    assert list(dest.parent.iterdir()) == []
    monkeypatch.setattr(fsutil.os, "fsync", real_fsync)
    copy_verified(sample_set / "lake-shore-01.jpg", dest)
    assert dest.read_bytes() == (sample_set / "lake-shore-01.jpg").read_bytes()


def test_rows_carry_the_stamp_of_the_incoming_copy(sample_set: Path, gf_home: Settings, db):
    """Intake records each copy's size and mtime: later stages check them instead of hashing."""
    image_set_id = _session("lake-shore")
    results = [copy_in(i, gf_home, SessionLedger(gf_home, image_set_id))
               for i in _items(sample_set, gf_home)]
    exifs = [read_exif(Path(r.incoming_path), r.sha256) for r in results]
    upsert_rows(results, exifs, image_set_id)
    with session_scope() as s:
        for row in s.scalars(select(Photo)):
            assert FileStamp(row.file_size, row.file_mtime_ns) == FileStamp.of(Path(row.incoming_path))


def test_a_rerun_hashes_only_the_original(sample_set: Path, gf_home: Settings, db):
    items = _items(sample_set, gf_home)
    image_set_id = _session("lake-shore")
    results = [copy_in(i, gf_home, SessionLedger(gf_home, image_set_id)) for i in items]
    upsert_rows(results, [read_exif(Path(r.incoming_path), r.sha256) for r in results], image_set_id)
    known = known_copies(items)
    assert len(known) == len(items)

    HASHES.reset()
    again = [copy_in(i, gf_home, SessionLedger(gf_home, image_set_id + 1),
                     known.get((i.set_name, i.name))) for i in items]
    assert not any(r.copied for r in again)
    assert [r.sha256 for r in again] == [r.sha256 for r in results]
    assert HASHES.total() == len(items)  # the originals; each copy is known by its stamp

    # A copy changed behind intake's back (same size, new stamp) is not trusted: the
    # original is copied (and hashed) again, the damaged copy hashed once and replaced.
    dest = Path(results[0].incoming_path)
    data = bytearray(dest.read_bytes())
    data[-3] ^= 0xFF
    dest.write_bytes(bytes(data))
    HASHES.reset()
    redo = copy_in(items[0], gf_home, SessionLedger(gf_home, image_set_id + 2),
                   known.get((items[0].set_name, items[0].name)))
    assert redo.copied and dest.read_bytes() == Path(items[0].source_path).read_bytes()
    assert HASHES.total() == 2  # the original (while copying), the damaged copy


def test_exif_from_real_jpegs(tmp_path: Path):
    spec = SampleSpec(name="x.jpg", width=800, height=600, taken_at=datetime(2026, 5, 1, 19, 45),
                      gps=(-33.8568, 151.2153, 12.5), orientation=6, seed=3)
    path = write_sample(tmp_path / "x.jpg", spec)
    data = read_exif(path, "sha")
    assert data.taken_at == datetime(2026, 5, 1, 19, 45)
    assert (data.camera_make, data.camera_model) == ("Canon", "Canon EOS R6")
    assert data.lens == "RF24-105mm F4 L IS USM"
    assert data.exposure_time and data.exposure_time.startswith("1/")
    assert data.f_number in (2.8, 4.0, 5.6, 8.0) and data.iso in (100, 200, 400, 800)
    assert data.focal_length in (24.0, 35.0, 50.0, 85.0)
    assert data.gps_lat == pytest.approx(-33.8568, abs=1e-4)
    assert data.gps_lon == pytest.approx(151.2153, abs=1e-4)
    assert data.gps_alt == pytest.approx(12.5)
    assert data.orientation == 6
    assert (data.width, data.height) == (800, 600)  # stored 600×800, shown rotated


def test_file_without_exif_still_gets_fields_it_can(tmp_path: Path):
    path = write_sample(tmp_path / "plain.jpg", SampleSpec(name="plain.jpg", width=320, height=200), exif=False)
    data = read_exif(path, "sha")
    assert data.note == "no EXIF"
    assert data.taken_at is None and data.camera_make is None
    assert (data.width, data.height) == (320, 200)


def test_rows_insert_refresh_and_respect_people(sample_set: Path, gf_home: Settings, db):
    items = _items(sample_set, gf_home)
    first = _session("lake-shore")
    results = [copy_in(i, gf_home, SessionLedger(gf_home, first)) for i in items]
    exifs = [read_exif(Path(r.incoming_path), r.sha256) for r in results]
    ids, report = upsert_rows(results, exifs, first)
    assert len(ids) == 4 and {o.message for o in report.outcomes} <= {"new row"}
    with session_scope() as s:
        rows = {r.original_name: r for r in s.scalars(select(Photo))}
        rows["lake-shore-01.jpg"].caption = "A person wrote this"
        rows["lake-shore-01.jpg"].edited_fields = ["caption"]
        rows["lake-shore-01.jpg"].status = RowStatus.SCORED
        rows["lake-shore-01.jpg"].brisque_score = 20.0
        approved = rows["lake-shore-02.jpg"]
        for status in ("scored", "captioned", "awaiting_review", "approved"):
            approved.status = status
        approved.caption = "approved caption"
    old_copy = Path(results[0].incoming_path)
    old_bytes = old_copy.read_bytes()
    # The photographer re-exports 01 (new content) and reruns.
    write_sample(sample_set / "lake-shore-01.jpg", SampleSpec(name="x", width=960, height=640, seed=999))
    second = _session("lake-shore")
    results = [copy_in(i, gf_home, SessionLedger(gf_home, second)) for i in _items(sample_set, gf_home)]
    exifs = [read_exif(Path(r.incoming_path), r.sha256) for r in results]
    ids2, report = upsert_rows(results, exifs, second)
    outcomes = {o.file: o for o in report.outcomes}
    assert outcomes["lake-shore-02.jpg"].message == "left alone: already approved"
    assert outcomes["lake-shore-01.jpg"].outcome == "changed"
    assert "re-exported" in outcomes["lake-shore-01.jpg"].message
    assert outcomes["lake-shore-03.jpg"].message == "refreshed (content unchanged)"
    with session_scope() as s:
        rows = list(s.scalars(select(Photo).order_by(Photo.id)))
        assert len(rows) == 5  # the re-export is a new photo; nothing duplicated
        versions = [r for r in rows if r.original_name == "lake-shore-01.jpg"]
        old, new = versions
        # The earlier row keeps its bytes, its human edit and its score.
        assert (old.caption, old.brisque_score, old.status) == ("A person wrote this", 20.0, "scored")
        assert Path(old.incoming_path) == old_copy and old_copy.read_bytes() == old_bytes
        assert new.status == "new" and new.caption is None and new.created_session_id == second
        assert Path(new.incoming_path).read_bytes() == (sample_set / "lake-shore-01.jpg").read_bytes()
        by_name = {r.original_name: r for r in rows if r is not old}
        assert by_name["lake-shore-02.jpg"].caption == "approved caption"
        assert by_name["lake-shore-02.jpg"].image_set_id == first
        assert by_name["lake-shore-03.jpg"].image_set_id == second
    snapshots = SessionLedger(gf_home, second).snapshots()
    assert {s["table"] for s in snapshots} == {"review_queue", "metadata_quality"}
    assert len([s for s in snapshots if s["table"] == "review_queue"]) == 2


def test_the_originals_own_text_fields_are_read(tmp_path: Path) -> None:
    """EXIF ImageDescription and an XMP dc:subject bag, as a photographer's tool writes them:
    stage 7's keyword evidence."""
    from PIL import Image

    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
           b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
           b'xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Description '
           b'photoshop:City="Thun" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/">'
           b'<dc:subject><rdf:Bag><rdf:li>sailing</rdf:li><rdf:li>harbour</rdf:li></rdf:Bag>'
           b'</dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
    image = Image.new("RGB", (64, 48), (90, 120, 160))
    exif = Image.Exif()
    exif[270] = "Paddle steamer Bluemlisalp at the pier"
    path = tmp_path / "steamer.jpg"
    image.save(path, "JPEG", exif=exif, xmp=xmp)
    data = read_exif(path, "0" * 64)
    assert data.embedded_text["ImageDescription"] == "Paddle steamer Bluemlisalp at the pier"
    assert data.embedded_text["XMP subject"] == "sailing, harbour"
    assert data.embedded_text["XMP City"] == "Thun"
    assert data.row_values()["embedded_text"] == data.embedded_text
