"""The gallery table: created when missing, bulk upsert on File_Name, on SQLite and MariaDB."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from blocks.gallery_db import GalleryDatabase, GalleryError, GalleryRecord, GalleryUnavailable
from tests.services import free_port

NOW = datetime(2026, 7, 1, 12, 0, 0)


def _record(name: str, caption: str = "A lake.", owner: str = "set/a.jpg") -> GalleryRecord:
    return GalleryRecord(
        file_name=name,
        source_key=owner,
        set_name="set",
        title="Lake",
        caption=caption,
        alt_text="A lake",
        keywords=["lake", "hills"],
        taken_at=datetime(2026, 6, 14, 9, 0),
        camera_make="Canon",
        iso=200,
        f_number=4.0,
        width=800,
        height=533,
        thumb_width=200,
        thumb_height=133,
        image_path=name,
        thumbnail_path=f"thumbs/{name}",
        image_url=f"https://x.org/{name}",
        thumbnail_url=f"https://x.org/thumbs/{name}",
        image_bytes=12345,
        image_sha256="a" * 64,
        published_at=NOW,
    )


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.integration)])
def gallery(request, tmp_path) -> GalleryDatabase:
    if request.param == "sqlite":
        return GalleryDatabase(url=f"sqlite:///{tmp_path / 'site' / 'gallery.db'}", table="photos")
    url = make_url(request.getfixturevalue("mariadb_url"))
    # The password (none on the private server) travels as a SecretStr, never in the URL.
    return GalleryDatabase(
        url=url.set(password=None).render_as_string(hide_password=False),
        password=url.password,
        table="photos",
    )


def test_upsert_inserts_then_updates_without_duplicates(gallery):
    with gallery.connect() as g:
        g.ensure_table()
        g.ensure_table()  # idempotent
        first = g.upsert([_record("a.jpg"), _record("b.jpg", owner="set/b.jpg")], NOW).ids
        assert set(first) == {"a.jpg", "b.jpg"}
        again = g.upsert(
            [_record("a.jpg", caption="Edited caption."), _record("c.jpg", owner="set/c.jpg")], NOW
        ).ids
        assert again["a.jpg"] == first["a.jpg"]  # same row, same id
        rows = {r["File_Name"]: r for r in g.rows()}
    assert sorted(rows) == ["a.jpg", "b.jpg", "c.jpg"]
    assert rows["a.jpg"]["Caption"] == "Edited caption."
    assert rows["a.jpg"]["Keywords"] == "lake, hills"
    assert rows["a.jpg"]["Thumbnail_URL"] == "https://x.org/thumbs/a.jpg"
    assert rows["a.jpg"]["Source_Key"] == "set/a.jpg"
    assert rows["b.jpg"]["ISO"] == 200


def test_owners_tells_who_holds_a_name(gallery):
    with gallery.connect() as g:
        g.ensure_table()
        g.upsert([_record("a.jpg", owner="set/a.jpg")], NOW)
        assert g.owners(["a.jpg", "zzz.jpg"]) == {"a.jpg": ("a.jpg", "set/a.jpg")}
        # compared the way the gallery's collation compares: case-folded
        assert g.owners(["A.JPG"]) == {"a.jpg": ("a.jpg", "set/a.jpg")}


def test_file_name_is_unique_in_the_schema(gallery):
    with gallery.connect() as g:
        g.ensure_table()
        g.upsert([_record("a.jpg")], NOW)
        with pytest.raises(IntegrityError):
            g.connection.execute(text("INSERT INTO photos (File_Name) VALUES ('a.jpg')"))
        g.connection.rollback()
        assert len(g.rows()) == 1


def _legacy_table(gallery: GalleryDatabase, rows: list[tuple[str, str | None]]) -> None:
    """The site's own table as some sites have it: our columns, no unique key on
    File_Name, and rows the site wrote itself (Source_Key NULL)."""
    from sqlalchemy import UniqueConstraint

    from blocks.gallery_db import gallery_table

    table = gallery_table("photos")
    for constraint in [c for c in table.constraints if isinstance(c, UniqueConstraint)]:
        table.constraints.discard(constraint)
    engine = gallery.engine()
    with engine.begin() as conn:
        table.create(conn)
        for name, owner in rows:
            conn.execute(table.insert().values(File_Name=name, Source_Key=owner, Caption="site's own"))
    engine.dispose()


def test_a_legacy_table_without_a_key_gets_one(gallery):
    _legacy_table(gallery, [("Sunset.jpg", None)])
    with gallery.connect() as g:
        g.ensure_table()  # creates the unique key: no name is there twice
        with pytest.raises(IntegrityError):
            g.connection.execute(text("INSERT INTO photos (File_Name) VALUES ('Sunset.jpg')"))
        g.connection.rollback()


def test_a_legacy_table_with_a_name_twice_is_refused_with_the_statement_to_run(gallery):
    _legacy_table(gallery, [("Sunset.jpg", None), ("sunset.jpg", "old/sunset.jpg")])
    with gallery.connect() as g, pytest.raises(
        GalleryError, match=r"no unique key on File_Name.*Sunset\.jpg.*ALTER TABLE photos ADD "
                            r"CONSTRAINT uq_photos_file_name UNIQUE \(File_Name\)"):
        g.ensure_table()


def test_a_new_sunset_never_overwrites_the_sites_own_Sunset(gallery):
    """MySQL's default collation ignores case: `sunset.jpg` *is* the site's `Sunset.jpg`."""
    _legacy_table(gallery, [("Sunset.jpg", None)])
    with gallery.connect() as g:
        g.ensure_table()
        result = g.upsert([_record("sunset.jpg", caption="A new photo.", owner="alps/sunset.jpg"),
                           _record("b.jpg", owner="alps/b.jpg")], NOW)
        assert set(result.ids) == {"b.jpg"}
        assert "Sunset.jpg" in result.refused["sunset.jpg"]
        rows = {r["File_Name"]: r for r in g.rows()}
    assert sorted(rows) == ["Sunset.jpg", "b.jpg"]
    assert rows["Sunset.jpg"]["Caption"] == "site's own" and rows["Sunset.jpg"]["Source_Key"] is None


def test_the_upsert_never_updates_a_row_another_photo_owns(gallery):
    with gallery.connect() as g:
        g.ensure_table()
        g.upsert([_record("a.jpg", owner="set/first.jpg")], NOW)
        result = g.upsert([_record("a.jpg", caption="Someone else.", owner="set/second.jpg")], NOW)
        assert result.ids == {} and "set/first.jpg" in result.refused["a.jpg"]
        # even when the pre-check is skipped, the guarded statement leaves the row alone
        g.connection.execute(g._upsert_statement([
            {"File_Name": "a.jpg", "Source_Key": "set/second.jpg", "Caption": "Someone else."}
            | {c.name: None for c in g.table.columns
               if c.name not in ("id", "File_Name", "Source_Key", "Caption")}]))
        g.connection.commit()
        (row,) = g.rows()
    assert (row["Source_Key"], row["Caption"]) == ("set/first.jpg", "A lake.")


def test_safe_url_masks_every_password():
    gallery = GalleryDatabase(url="mysql+pymysql://site:pw1@db/site?password=pw2&charset=utf8mb4&token=t0k")
    shown = gallery.safe_url()
    assert "pw1" not in shown and "pw2" not in shown and "t0k" not in shown
    assert "charset=utf8mb4" in shown


def test_an_existing_table_without_our_columns_is_reported(gallery):
    engine = gallery.engine()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE photos (id INTEGER PRIMARY KEY, File_Name VARCHAR(255))"))
    engine.dispose()
    with gallery.connect() as g, pytest.raises(GalleryError, match="lacks the columns .*Caption"):
        g.ensure_table()


def test_table_name_must_be_an_identifier():
    with pytest.raises(ValueError, match="plain SQL identifier"):
        GalleryDatabase(url="sqlite://", table="gallery; DROP TABLE x")


@pytest.mark.integration
def test_a_database_that_is_down_is_unavailable_and_the_password_stays_secret():
    gallery = GalleryDatabase(
        url=f"mysql+pymysql://site@127.0.0.1:{free_port()}/site",
        password="s3cret-pw",
        connect_timeout=2,
    )
    with pytest.raises(GalleryUnavailable, match="Can't connect") as info:
        with gallery.connect():
            pass
    assert "s3cret-pw" not in str(info.value)
    assert "s3cret-pw" not in repr(gallery)
    assert "s3cret-pw" not in gallery.safe_url()


@pytest.mark.integration
def test_mariadb_uses_on_duplicate_key_update(mariadb_url):
    gallery = GalleryDatabase(url=mariadb_url, table="gallery")
    with gallery.connect() as g:
        g.ensure_table()
        sql = str(
            g._upsert_statement(
                [
                    {"File_Name": "a.jpg"}
                    | {c.name: None for c in g.table.columns if c.name not in ("id", "File_Name")}
                ]
            ).compile(dialect=g.connection.dialect)
        )
    assert "ON DUPLICATE KEY UPDATE" in sql
    engine = create_engine(mariadb_url)
    with engine.connect() as conn:
        indexes = conn.execute(
            text("SHOW INDEX FROM gallery WHERE Column_name = 'File_Name'")
        ).all()
    engine.dispose()
    assert indexes and indexes[0]._mapping["Non_unique"] == 0


@pytest.mark.integration
def test_two_writers_that_deadlock_both_publish(mariadb_url, monkeypatch):
    """Two runs publishing new names at once: each owner check's SELECT … FOR UPDATE
    takes the gap where the names would go, then each insert waits on the other's gap
    and InnoDB rolls one transaction back (error 1213). That one is run again; both
    writers' rows land once, each with its id, and nothing is refused."""
    import threading

    from blocks import gallery_db

    # (SQLite takes one writer at a time: it cannot deadlock.)
    gallery = GalleryDatabase(url=mariadb_url, table="photos")
    with gallery.connect() as g:
        g.ensure_table()
    # Both owner checks run before either insert: the interleaving that deadlocks.
    both_checked = threading.Barrier(2, timeout=20)
    calls: list[str] = []
    owners = gallery_db.GalleryConnection._owners

    def owners_then_meet(self, names, lock=False):
        found = owners(self, names, lock=lock)
        if lock:
            who = threading.current_thread().name
            if who not in calls:  # each writer's first check only
                both_checked.wait()
            calls.append(who)
        return found

    monkeypatch.setattr(gallery_db.GalleryConnection, "_owners", owners_then_meet)
    results, errors = {}, {}

    def publish(who: str) -> None:
        try:
            with gallery.connect() as g:
                results[who] = g.upsert(
                    [_record(f"{who}-{i}.jpg", owner=f"set/{who}-{i}.jpg") for i in range(3)], NOW)
        except Exception as exc:  # recorded: the assertion below names it
            errors[who] = exc

    threads = [threading.Thread(target=publish, args=(who,), name=who) for who in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(calls) == 3, f"expected exactly one writer to be rolled back and rerun: {calls}"
    for who in ("a", "b"):
        assert sorted(results[who].ids) == [f"{who}-{i}.jpg" for i in range(3)]
        assert not results[who].refused
    with gallery.connect() as g:
        rows = g.rows()
    assert sorted(r["File_Name"] for r in rows) == sorted(
        f"{who}-{i}.jpg" for who in ("a", "b") for i in range(3))
    assert len({r["id"] for r in rows}) == 6


def test_only_a_deadlock_is_retried():
    from pymysql.err import OperationalError as MyOperational
    from sqlalchemy.exc import OperationalError

    from blocks.gallery_db import deadlocked

    def wrapped(orig):
        return OperationalError("INSERT", {}, orig)

    assert deadlocked(wrapped(MyOperational(1213, "Deadlock found when trying to get lock")))
    assert not deadlocked(wrapped(MyOperational(1205, "Lock wait timeout exceeded")))
    assert not deadlocked(wrapped(MyOperational(2013, "Lost connection")))

    class PgError(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    assert deadlocked(wrapped(PgError("40P01")))
    assert not deadlocked(wrapped(PgError("23505")))
