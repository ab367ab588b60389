"""Stage 9 end to end: approved rows to a real SFTP server / local site and a real
gallery table; interrupted and resumed at the awkward moments."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import ExifTags, Image, IptcImagePlugin

from blocks.gallery_db import GalleryConnection, GalleryDatabase, GalleryUnavailable
from blocks.targets import (
    TEMP_SUFFIX,
    HostKeyRejected,
    LocalFolderSession,
    LocalFolderTarget,
    SftpSession,
    SftpTarget,
)
from galleryflow.core.settings import Settings
from galleryflow.publishing.derivatives import work_folder
from flows.fanout import publish_approved
from galleryflow.publishing.cleanup import cleanup_work_files
from galleryflow.publishing.config import PublishConfigError, resolve_gallery, resolve_target
from galleryflow.publishing.names import publish_file_name
from galleryflow.publishing.summary import PublishIncomplete
from tasks.publish import publish_rows, publishable_row_ids
from tests.fixtures.crash import run_child_until_killed
from tests.fixtures.rows import RowSpec, by_id, drafted, insert_set, load_photos, log_entries
from tests.fixtures.services import sftp_target_fields
from tests.services import free_port


def _settings(base: Settings, **publish) -> Settings:
    publish = {"full_long_edge": 640, "thumb_long_edge": 160, **publish}
    return base.model_copy(update={"publish": base.publish.model_copy(update=publish)})


@pytest.fixture
def settings(db, gf_home) -> Settings:
    return _settings(gf_home)


@pytest.fixture
def uploads(monkeypatch) -> list[str]:
    """Every file actually uploaded (either target), by remote path."""
    seen: list[str] = []
    for cls in (SftpSession, LocalFolderSession):
        original = cls.upload

        def spy(self, local, dest, _original=original):
            seen.append(dest.relative)
            return _original(self, local, dest)

        monkeypatch.setattr(cls, "upload", spy)
    return seen


def _local(settings: Settings) -> LocalFolderTarget:
    return LocalFolderTarget(root=str(settings.site_dir), public_base_url="https://x.org/g")


def _sqlite_gallery(settings: Settings) -> GalleryDatabase:
    return GalleryDatabase(url=settings.gallery_db_url, table="gallery")


def _gallery_rows(gallery: GalleryDatabase) -> dict[str, dict]:
    with gallery.connect() as g:
        g.ensure_table()
        return {r["File_Name"]: r for r in g.rows()}


def _remote_files(server, base: str) -> list[str]:
    with server.client() as sftp:
        found = []
        for folder in ("", "thumbs"):
            try:
                names = sftp.listdir(f"{base}/{folder}".rstrip("/"))
            except FileNotFoundError:
                continue
            found += [f"{folder}/{n}".lstrip("/") for n in names if n != "thumbs"]
        return sorted(found)


def _read_remote(server, path: str) -> bytes:
    with server.client() as sftp, sftp.open(path, "rb") as handle:
        return handle.read()


MIXED = [
    RowSpec(),
    RowSpec(),
    RowSpec(status="rejected"),
    RowSpec(status="awaiting_review"),
    RowSpec(proof="blocked"),
    RowSpec(proof="pending"),
    RowSpec(status="captioned"),
]


# --------------------------------------------------------------------- happy paths


def test_only_approved_rows_with_a_passing_proof_are_published(settings, tmp_path, uploads):
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted(MIXED)).row_ids
    target, gallery = _local(settings), _sqlite_gallery(settings)
    report = publish_rows(ids, settings=settings, target=target, gallery=gallery)

    outcomes = {o.file: (o.outcome, o.message) for o in report.outcomes}
    assert [outcomes[f"lake-shore-0{i}.jpg"][0] for i in range(1, 8)] == [
        "ok",
        "ok",
        "skipped",
        "skipped",
        "skipped",
        "skipped",
        "skipped",
    ]
    assert "not approved (status rejected)" in outcomes["lake-shore-03.jpg"][1]
    assert "proof is blocked" in outcomes["lake-shore-05.jpg"][1]

    rows = by_id(load_photos(settings=settings, ids=ids))
    gallery_rows = _gallery_rows(gallery)
    assert sorted(gallery_rows) == ["lake-shore-dawn-01.jpg", "lake-shore-dawn-02.jpg"]
    for row_id in ids[:2]:
        row = rows[row_id]
        name = f"{row.web_file_name}.jpg"
        assert row.status == "published" and row.published_at is not None
        assert row.remote_id == str(gallery_rows[name]["id"])
        assert row.public_url == f"https://x.org/g/{name}"
        assert row.thumbnail_url == f"https://x.org/g/thumbs/{name}"
        assert (settings.site_dir / name).is_file() and (
            settings.site_dir / "thumbs" / name
        ).is_file()
        assert gallery_rows[name]["Image_URL"] == row.public_url
        assert gallery_rows[name]["Caption"] == row.caption
        assert gallery_rows[name]["GPS_Lat"] is None  # GPS is not published by default
    assert [rows[i].status for i in ids[2:]] == [
        "rejected",
        "awaiting_review",
        "approved",
        "approved",
        "captioned",
    ]
    assert all(rows[i].remote_id is None for i in ids[2:])
    assert sorted(uploads) == [
        "lake-shore-dawn-01.jpg",
        "lake-shore-dawn-02.jpg",
        "thumbs/lake-shore-dawn-01.jpg",
        "thumbs/lake-shore-dawn-02.jpg",
    ]
    log = log_entries(settings)
    assert sorted((e.action, e.status) for e in log) == sorted(
        [("upload_image", "done"), ("upload_thumb", "done"), ("upsert", "done")] * 2
    )
    assert {e.review_id for e in log} == set(ids[:2])


def test_publish_approved_summarises_and_cleans_work_files(settings, tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.publish.get_settings", lambda: settings)
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec(), RowSpec(), RowSpec(status="rejected")])).row_ids
    # a model-ready copy from stage 6 lives in work/ too; publish cleans it for published rows
    model_copy = settings.work_dir / "model" / "x.jpg"
    model_copy.parent.mkdir(parents=True)
    model_copy.write_bytes(b"model input")
    from galleryflow.db import Photo, session_scope

    with session_scope(settings.db_url) as session:
        session.get(Photo, ids[0]).ollama_path = str(model_copy)
    assert publishable_row_ids(settings) == ids[:2]

    summary = publish_approved(ids, settings=settings)
    assert summary.published == ["lake-shore-01.jpg", "lake-shore-02.jpg"]
    assert summary.skipped == ["lake-shore-03.jpg"] and summary.failed == []
    assert not any(work_folder(settings.work_dir, i).exists() for i in ids)
    assert not model_copy.exists()
    assert by_id(load_photos(settings=settings, ids=ids))[ids[0]].ollama_path is None
    incoming = settings.incoming_dir / "lake-shore"
    assert len(list(incoming.glob("*.jpg"))) == 3  # incoming copies are never work files
    assert publishable_row_ids(settings) == []
    # the local site is browsable: an index of the gallery, thumbnails linking to images
    index = (settings.site_dir / "index.html").read_text()
    assert '<a href="lake-shore-dawn-01.jpg"><img src="thumbs/lake-shore-dawn-01.jpg"' in index
    assert "A calm lake below green hills" in index and "2 photos" in index


@pytest.mark.integration
def test_full_publish_over_sftp_into_mariadb(
    db, gf_home, tmp_path, sftp_server, mariadb_url, uploads
):
    settings = _settings(gf_home)
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted(MIXED)).row_ids
    base = sftp_server.fresh_dir()
    target = SftpTarget(**sftp_target_fields(sftp_server, base))
    gallery = GalleryDatabase(url=mariadb_url, table="gallery")

    report = publish_rows(ids, settings=settings, target=target, gallery=gallery)
    assert report.failed == 0 and sum(o.outcome == "ok" for o in report.outcomes) == 2

    assert _remote_files(sftp_server, base) == [
        "lake-shore-dawn-01.jpg",
        "lake-shore-dawn-02.jpg",
        "thumbs/lake-shore-dawn-01.jpg",
        "thumbs/lake-shore-dawn-02.jpg",
    ]
    rows = by_id(load_photos(settings=settings, ids=ids))
    gallery_rows = _gallery_rows(gallery)
    assert sorted(gallery_rows) == ["lake-shore-dawn-01.jpg", "lake-shore-dawn-02.jpg"]
    first = rows[ids[0]]
    assert first.status == "published"
    assert first.public_url == "https://photos.example.org/gallery/lake-shore-dawn-01.jpg"
    assert first.remote_id == str(gallery_rows["lake-shore-dawn-01.jpg"]["id"])

    # The published file, read back from the server: words embedded, GPS gone, web size.
    data = _read_remote(sftp_server, f"{base}/lake-shore-dawn-01.jpg")
    with Image.open(io.BytesIO(data)) as img:
        assert max(img.size) == 640
        iptc = IptcImagePlugin.getiptcinfo(img)
        xmp = img.getxmp()["xmpmeta"]["RDF"]["Description"]
        exif = img.getexif()
    assert iptc[(2, 120)].decode() == first.caption
    assert [k.decode() for k in iptc[(2, 25)]] == first.keywords
    assert xmp["AltTextAccessibility"]["Alt"]["li"]["text"] == first.alt_text
    assert xmp["subject"]["Bag"]["li"] == first.keywords
    assert first.gps_lat is not None  # the source had GPS …
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo) and b"GPS" not in data  # … the site does not

    # Rerun: nothing uploaded, nothing duplicated.
    uploads.clear()
    again = publish_rows(ids, settings=settings, target=target, gallery=gallery)
    assert {o.outcome for o in again.outcomes} == {"skipped"}
    assert uploads == []
    assert len(_gallery_rows(gallery)) == 2


def test_keep_gps_publishes_the_location(db, gf_home, tmp_path):
    settings = _settings(gf_home, keep_gps=True)
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec()])).row_ids
    gallery = _sqlite_gallery(settings)
    publish_rows(ids, settings=settings, target=_local(settings), gallery=gallery)
    with Image.open(settings.site_dir / "lake-shore-dawn-01.jpg") as img:
        gps = img.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert _gallery_rows(gallery)["lake-shore-dawn-01.jpg"]["GPS_Lat"] == pytest.approx(46.5)


def test_a_target_block_can_keep_gps_over_the_settings(settings, tmp_path):
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec()])).row_ids
    target = LocalFolderTarget(root=str(settings.site_dir), keep_gps=True, full_long_edge=320)
    publish_rows(ids, settings=settings, target=target, gallery=_sqlite_gallery(settings))
    with Image.open(settings.site_dir / "lake-shore-dawn-01.jpg") as img:
        assert img.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert max(img.size) == 320


# ----------------------------------------------------------------- refusals


@pytest.mark.integration
def test_a_file_name_that_would_escape_the_remote_base_is_refused(
    db, gf_home, tmp_path, sftp_server
):
    settings = _settings(gf_home)
    ids = insert_set(
        settings,
        tmp_path / "sets",
        "lake-shore",
        size=(960, 640),
        per_row=drafted([
            RowSpec(web_file_name="../../escaped"),
            RowSpec(),
            RowSpec(web_file_name="/etc/cron.d/evil"),
        ]),
    ).row_ids
    base = sftp_server.fresh_dir()
    target = SftpTarget(**sftp_target_fields(sftp_server, base))
    report = publish_rows(ids, settings=settings, target=target, gallery=_sqlite_gallery(settings))
    outcomes = {o.file: o for o in report.outcomes}
    for name in ("lake-shore-01.jpg", "lake-shore-03.jpg"):
        assert outcomes[name].outcome == "failed"
        assert "web file name refused" in outcomes[name].message
        assert "separator" in outcomes[name].message
    assert outcomes["lake-shore-02.jpg"].outcome == "ok"
    rows = by_id(load_photos(settings=settings, ids=ids))
    assert [rows[i].status for i in ids] == ["approved", "published", "approved"]
    assert _remote_files(sftp_server, base) == [
        "lake-shore-dawn-02.jpg",
        "thumbs/lake-shore-dawn-02.jpg",
    ]
    parent = base.rsplit("/", 1)[0]
    with sftp_server.client() as sftp:
        assert not any(n.startswith("escaped") for n in sftp.listdir(parent))


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "café", "x..y"])
def test_publish_file_name_never_rewrites_an_unsafe_name(name):
    from blocks.targets import UnsafeRemotePath

    with pytest.raises(UnsafeRemotePath):
        publish_file_name(name, "orig.jpg")


def test_publish_file_name_rules():
    assert publish_file_name("lake-dawn", "x.jpg") == "lake-dawn.jpg"
    assert publish_file_name("lake-dawn.JPG", "x.jpg") == "lake-dawn.jpg"
    assert publish_file_name(None, "IMG 0042 (copy).jpeg") == "img-0042-copy.jpg"


def test_a_name_held_by_another_photo_is_not_overwritten(settings, tmp_path):
    gallery, target = _sqlite_gallery(settings), _local(settings)
    first = insert_set(settings, tmp_path / "a" / "sets", "set-a", size=(960, 640),
                       per_row=drafted([RowSpec(web_file_name="sunrise")])).row_ids
    publish_rows(first, settings=settings, target=target, gallery=gallery)
    before = (settings.site_dir / "sunrise.jpg").read_bytes()
    second = insert_set(settings, tmp_path / "b" / "sets", "set-b", size=(960, 640),
                        per_row=drafted([RowSpec(web_file_name="sunrise")])).row_ids
    report = publish_rows(second, settings=settings, target=target, gallery=gallery)
    assert report.outcomes[0].outcome == "failed"
    # the state DB's reservation refuses it before anything is uploaded
    assert "reserved by another photo (set-a/set-a-01.jpg)" in report.outcomes[0].message
    assert (settings.site_dir / "sunrise.jpg").read_bytes() == before
    assert by_id(load_photos(settings=settings, ids=second))[second[0]].status == "approved"


@pytest.mark.integration
def test_a_new_sunset_never_overwrites_the_sites_own_Sunset(settings, tmp_path, mariadb_url):
    """The site's table on MariaDB, made by the site itself: no unique key, its own
    `Sunset.jpg` row. galleryflow adds the key, and a new photo drafted `sunset` is
    refused (MySQL's collation ignores case), its files never uploaded."""
    from sqlalchemy import UniqueConstraint

    from blocks.gallery_db import gallery_table

    legacy = gallery_table("gallery")
    for constraint in [c for c in legacy.constraints if isinstance(c, UniqueConstraint)]:
        legacy.constraints.discard(constraint)
    gallery = GalleryDatabase(url=mariadb_url, table="gallery")
    engine = gallery.engine()
    with engine.begin() as conn:
        legacy.create(conn)
        conn.execute(legacy.insert().values(File_Name="Sunset.jpg", Caption="the site's own"))
    engine.dispose()
    ids = insert_set(settings, tmp_path / "sets", "alps", size=(640, 480),
                     per_row=drafted([RowSpec(web_file_name="sunset"), RowSpec()])).row_ids
    report = publish_rows(ids, settings=settings, target=_local(settings), gallery=gallery)
    outcomes = {o.file: o for o in report.outcomes}
    assert outcomes["alps-01.jpg"].outcome == "failed"
    assert "taken in the gallery by Sunset.jpg" in outcomes["alps-01.jpg"].message
    assert outcomes["alps-02.jpg"].outcome == "ok"
    rows = _gallery_rows(gallery)
    assert sorted(rows) == ["Sunset.jpg", "lake-shore-dawn-02.jpg"]
    assert rows["Sunset.jpg"]["Caption"] == "the site's own"
    assert not (settings.site_dir / "sunset.jpg").exists()
    assert by_id(load_photos(settings=settings, ids=ids))[ids[0]].status == "approved"
    # and the key now exists: a second Sunset can never be inserted
    with gallery.connect() as g, pytest.raises(Exception, match="Duplicate"):
        g.connection.execute(legacy.insert().values(File_Name="SUNSET.jpg"))


def test_duplicate_names_within_one_publish(settings, tmp_path):
    ids = insert_set(
        settings, tmp_path / "sets", "lake-shore", size=(960, 640),
        per_row=drafted([RowSpec(web_file_name="same"), RowSpec(web_file_name="same")]),
    ).row_ids
    report = publish_rows(
        ids, settings=settings, target=_local(settings), gallery=_sqlite_gallery(settings)
    )
    assert [o.outcome for o in report.outcomes] == ["ok", "failed"]
    assert "reserved by another photo (lake-shore/lake-shore-01.jpg)" in report.outcomes[1].message


def test_a_missing_incoming_copy_fails_that_row_only(settings, tmp_path):
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec(), RowSpec()])).row_ids
    Path(by_id(load_photos(settings=settings, ids=ids))[ids[0]].incoming_path).unlink()
    report = publish_rows(
        ids, settings=settings, target=_local(settings), gallery=_sqlite_gallery(settings)
    )
    assert [o.outcome for o in report.outcomes] == ["failed", "ok"]
    assert "incoming copy is missing" in report.outcomes[0].message


@pytest.mark.integration
def test_an_unknown_host_key_stops_the_publish(db, gf_home, tmp_path, sftp_server):
    settings = _settings(gf_home)
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec()])).row_ids
    target = SftpTarget(
        **sftp_target_fields(
            sftp_server, sftp_server.fresh_dir(), known_hosts="", known_hosts_file=None
        )
    )
    gallery = _sqlite_gallery(settings)
    with pytest.raises(HostKeyRejected):
        publish_rows(ids, settings=settings, target=target, gallery=gallery)
    assert by_id(load_photos(settings=settings, ids=ids))[ids[0]].status == "approved"
    assert _gallery_rows(gallery) == {}


# ----------------------------------------------------- the gallery database is down


@pytest.mark.integration
def test_a_gallery_database_that_is_down_leaves_rows_approved(settings, tmp_path, uploads):
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec(), RowSpec()])).row_ids
    down = GalleryDatabase(
        url=f"mysql+pymysql://site@127.0.0.1:{free_port()}/site", connect_timeout=2
    )
    with pytest.raises(GalleryUnavailable):
        publish_rows(ids, settings=settings, target=_local(settings), gallery=down)
    rows = by_id(load_photos(settings=settings, ids=ids))
    assert {rows[i].status for i in ids} == {"approved"}
    assert all(rows[i].remote_id is None and rows[i].published_at is None for i in ids)
    assert uploads == []  # it was checked before anything went to the site

    publish_rows(ids, settings=settings, target=_local(settings), gallery=_sqlite_gallery(settings))
    assert {r.status for r in by_id(load_photos(settings=settings, ids=ids)).values()} == {"published"}


def test_gallery_lost_between_upload_and_upsert(settings, tmp_path, uploads, monkeypatch):
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec(), RowSpec()])).row_ids
    target, gallery = _local(settings), _sqlite_gallery(settings)

    def lost(self, records, now):
        raise GalleryUnavailable("gallery database test: upsert: server has gone away")

    with monkeypatch.context() as patch:
        patch.setattr(GalleryConnection, "upsert", lost)
        with pytest.raises(GalleryUnavailable, match="gone away"):
            publish_rows(ids, settings=settings, target=target, gallery=gallery)
    assert {r.status for r in by_id(load_photos(settings=settings, ids=ids)).values()} == {"approved"}
    assert len(uploads) == 4
    upserts = [e for e in log_entries(settings) if e.action == "upsert"]
    assert [e.status for e in upserts] == ["failed", "failed"] and "gone away" in upserts[0].detail

    uploads.clear()
    publish_rows(ids, settings=settings, target=target, gallery=gallery)
    assert uploads == []  # the files were already there
    assert {r.status for r in by_id(load_photos(settings=settings, ids=ids)).values()} == {"published"}


# ------------------------------------------------------------ killed and resumed


@pytest.mark.integration
def test_upload_killed_mid_file_leaves_no_partial_file_under_the_final_name(
    db, gf_home, tmp_path, sftp_server, uploads
):
    settings = _settings(gf_home, full_long_edge=960)  # big enough for several blocks
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec(), RowSpec()])).row_ids
    base = sftp_server.fresh_dir()
    fields = sftp_target_fields(sftp_server, base)
    gallery_fields = dict(url=settings.gallery_db_url, table="gallery")

    run_child_until_killed(tmp_path, settings, "mid_file", "sftp", fields, gallery_fields, ids)

    with sftp_server.client() as sftp:
        names = sftp.listdir(base)
        assert len(names) == 1  # only the temporary name, of this upload alone
        assert names[0].startswith(".lake-shore-dawn-01.jpg.") and names[0].endswith(TEMP_SUFFIX)
        partial = sftp.stat(f"{base}/{names[0]}").st_size
    assert 0 < partial < 16 * 1024 * 2 + 1  # the child died after its first block or two
    assert [(e.action, e.status) for e in log_entries(settings)] == [("upload_image", "started")]
    assert {r.status for r in by_id(load_photos(settings=settings, ids=ids)).values()} == {"approved"}

    target = SftpTarget(**fields)
    gallery = GalleryDatabase(**gallery_fields)
    report = publish_rows(ids, settings=settings, target=target, gallery=gallery)
    assert [o.outcome for o in report.outcomes] == ["ok", "ok"]
    assert _remote_files(sftp_server, base) == [
        "lake-shore-dawn-01.jpg",
        "lake-shore-dawn-02.jpg",
        "thumbs/lake-shore-dawn-01.jpg",
        "thumbs/lake-shore-dawn-02.jpg",
    ]  # temporary gone
    published = _read_remote(sftp_server, f"{base}/lake-shore-dawn-01.jpg")
    image_log = [
        e for e in log_entries(settings) if e.review_id == ids[0] and e.action == "upload_image"
    ]
    assert [e.status for e in image_log] == ["failed", "done"]  # the killed try, the rerun
    assert image_log[0].detail.startswith("interrupted")
    assert hashlib.sha256(published).hexdigest() == image_log[1].sha256
    assert len(published) == image_log[1].size


def test_local_publish_killed_before_rename(settings, tmp_path):
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec()])).row_ids
    fields = dict(root=str(settings.site_dir), public_base_url="https://x.org/g")
    gallery_fields = dict(url=settings.gallery_db_url, table="gallery")
    run_child_until_killed(
        tmp_path, settings, "before_rename_local", "local", fields, gallery_fields, ids
    )
    assert not (settings.site_dir / "lake-shore-dawn-01.jpg").exists()
    leftovers = [p.name for p in settings.site_dir.iterdir()]
    assert leftovers and all(n.startswith(".lake-shore-dawn-01.jpg.") for n in leftovers)

    publish_rows(
        ids,
        settings=settings,
        target=LocalFolderTarget(**fields),
        gallery=GalleryDatabase(**gallery_fields),
    )
    assert sorted(p.name for p in settings.site_dir.iterdir()) == [
        "lake-shore-dawn-01.jpg",
        "thumbs",
    ]
    assert by_id(load_photos(settings=settings, ids=ids))[ids[0]].status == "published"


@pytest.mark.integration
@pytest.mark.parametrize("crash", ["before_upsert", "before_mark", "after_rename"])
def test_crash_between_upload_and_upsert_then_rerun(
    db, gf_home, tmp_path, sftp_server, mariadb_url, uploads, crash
):
    settings = _settings(gf_home)
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec(), RowSpec(), RowSpec()])).row_ids
    base = sftp_server.fresh_dir()
    fields = sftp_target_fields(sftp_server, base)
    gallery_fields = dict(url=mariadb_url, table="gallery")
    gallery = GalleryDatabase(**gallery_fields)

    run_child_until_killed(tmp_path, settings, crash, "sftp", fields, gallery_fields, ids)

    # Nothing is marked published that is not on the server and in the table.
    assert {r.status for r in by_id(load_photos(settings=settings, ids=ids)).values()} == {"approved"}
    in_table = _gallery_rows(gallery)
    assert len(in_table) == (3 if crash == "before_mark" else 0)
    on_server = _remote_files(sftp_server, base)
    if crash == "after_rename":  # the first image was renamed into place, then the kill
        assert on_server == ["lake-shore-dawn-01.jpg"]
        assert [(e.action, e.status) for e in log_entries(settings)] == [
            ("upload_image", "started")
        ]
    else:
        assert len(on_server) == 6

    report = publish_rows(ids, settings=settings, target=SftpTarget(**fields), gallery=gallery)
    assert [o.outcome for o in report.outcomes] == ["ok", "ok", "ok"]
    if crash == "after_rename":
        assert "lake-shore-dawn-01.jpg" not in uploads  # recognised by its sha256, not resent
        assert len(uploads) == 5
        found = [e for e in log_entries(settings) if e.detail and "interrupted run" in e.detail]
        assert len(found) == 1
    else:
        assert uploads == []  # nothing uploaded twice
    assert "resumed" in report.outcomes[0].message

    rows = by_id(load_photos(settings=settings, ids=ids))
    table = _gallery_rows(gallery)
    assert len(table) == 3  # no duplicates
    if crash == "before_mark":
        assert {str(r["id"]) for r in table.values()} == {str(r["id"]) for r in in_table.values()}
    for row in rows.values():
        assert row.status == "published"
        assert row.remote_id == str(table[f"{row.web_file_name}.jpg"]["id"])
    assert len(_remote_files(sftp_server, base)) == 6  # no temporaries left


# ------------------------------------------------------------------- configuration


def test_resolve_defaults_to_the_local_site_and_sqlite(gf_home):
    target, gallery = resolve_target(gf_home), resolve_gallery(gf_home)
    assert isinstance(target, LocalFolderTarget)
    assert Path(target.root) == gf_home.site_dir
    assert gallery.url == gf_home.gallery_db_url and gallery.table == "gallery"


def test_sftp_without_a_block_is_a_configuration_error(gf_home):
    settings = gf_home.model_copy(
        update={"publish": gf_home.publish.model_copy(update={"target": "sftp"})}
    )
    with pytest.raises(PublishConfigError, match="target_block"):
        resolve_target(settings)


def test_cleanup_never_touches_files_outside_work(settings, tmp_path):
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec()])).row_ids
    publish_rows(ids, settings=settings, target=_local(settings), gallery=_sqlite_gallery(settings))
    from galleryflow.db import Photo, session_scope

    outside = tmp_path / "precious.jpg"
    outside.write_bytes(b"not ours")
    with session_scope(settings.db_url) as session:
        session.get(Photo, ids[0]).thumbnail_path = str(outside)
    removed = cleanup_work_files(ids, settings)
    assert removed == 2  # the two derivatives
    assert outside.exists()


# ------------------------------------------------------------------------ Prefect


@pytest.mark.integration
def test_publish_in_a_prefect_flow_with_summary_artifact_and_retries(
    prefect_api, db, gf_home, tmp_path, monkeypatch
):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from galleryflow.core.prefect_run import ensure_limit
    from galleryflow.core.settings import reset_settings

    monkeypatch.setenv("GALLERYFLOW_PUBLISH__FULL_LONG_EDGE", "640")
    monkeypatch.setenv("GALLERYFLOW_PUBLISH__RETRIES", "1")
    monkeypatch.setenv("GALLERYFLOW_PUBLISH__RETRY_DELAY_SECONDS", "0")
    reset_settings()
    from galleryflow.core.settings import get_settings

    settings = get_settings()
    ids = insert_set(settings, tmp_path / "sets", "lake-shore", size=(960, 640),
                     per_row=drafted([RowSpec(), RowSpec(), RowSpec(status="rejected")])).row_ids

    @flow(name="publish-test")
    def run(row_ids: list[int]) -> list[str]:
        return publish_approved(row_ids).published

    state = run(ids, return_state=True)
    assert state.is_completed(), state
    assert state.result() == ["lake-shore-01.jpg", "lake-shore-02.jpg"]
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["publish-summary"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
        assert artifacts and "2 published, 1 skipped, 0 failed" in artifacts[0].description
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        chunk_runs = [t for t in task_runs if t.name.startswith("publish-chunk")]
        # Untagged: the throttle is the global limit `publish` (limit_slot); a tag would
        # cost each run a concurrency request before it may start (docs/operations.md).
        assert chunk_runs and all(t.tags == [] for t in chunk_runs)
    log = log_entries(settings)
    assert {e.flow_run_id for e in log} == {str(flow_run_id)}

    # A gallery that is down: the chunk is retried (a network error), then the run fails
    # with the rows still approved.
    more = insert_set(settings, tmp_path / "more" / "sets", "harbour", size=(960, 640),
                      per_row=drafted([RowSpec(web_file_name="harbour-evening")])).row_ids
    monkeypatch.setenv(
        "GALLERYFLOW_PUBLISH__GALLERY_URL", f"mysql+pymysql://site@127.0.0.1:{free_port()}/site"
    )
    reset_settings()
    state = run(more, return_state=True)
    assert state.is_failed()
    with pytest.raises(PublishIncomplete, match="GalleryUnavailable"):
        state.result()
    assert by_id(load_photos(settings=settings, ids=more))[more[0]].status == "approved"
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
        chunk = [t for t in runs if t.name.startswith("publish-chunk")][0]
        assert chunk.run_count == 2  # first try + one retry

        # The stage created the global limit its chunks hold a slot of
        # (publish.concurrency slots); creating it again changes nothing.
        try:
            assert ensure_limit("publish", settings.publish.concurrency) is False  # idempotent
            limit = client.read_global_concurrency_limit_by_name("publish")
            assert limit.limit == 4
        finally:
            # The harness serves the whole session: leave no limit of ours behind.
            client.delete_global_concurrency_limit_by_name("publish")


@pytest.mark.integration
def test_named_blocks_are_resolved(prefect_api, gf_home, sftp_server):
    from prefect.blocks.core import Block

    SftpTarget(**sftp_target_fields(sftp_server, "/srv/site"), password="pw-in-block").save(
        "test-site", overwrite=True
    )
    GalleryDatabase(url="sqlite:///x.db", password="db-pw", table="photos").save(
        "test-gallery", overwrite=True
    )
    settings = gf_home.model_copy(
        update={
            "publish": gf_home.publish.model_copy(
                update=dict(target="sftp", target_block="test-site", gallery_block="test-gallery")
            )
        }
    )
    target, gallery = resolve_target(settings), resolve_gallery(settings)
    assert isinstance(target, SftpTarget) and target.remote_base == "/srv/site"
    assert target.password.get_secret_value() == "pw-in-block"
    assert gallery.table == "photos" and gallery.password.get_secret_value() == "db-pw"
    missing = settings.model_copy(
        update={"publish": settings.publish.model_copy(update={"target_block": "no-such-block"})}
    )
    with pytest.raises(PublishConfigError, match="no-such-block"):
        resolve_target(missing)
    assert Block  # imported for registration side effects in older Prefect versions
