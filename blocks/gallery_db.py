"""The website's gallery table: a ``GalleryDatabase`` block and its bulk upsert.

The site reads one table (name configurable, default ``gallery``), keyed by
``File_Name``: one row per published image with the published metadata, the
EXIF facts and the public paths. galleryflow creates it when it is missing and
checks that an existing one has the columns it writes.

The upsert is one statement per chunk: ``INSERT … ON DUPLICATE KEY UPDATE`` on
MySQL/MariaDB, ``INSERT … ON CONFLICT(File_Name) DO UPDATE`` on SQLite (the
embedded default) and PostgreSQL. Republishing a file name updates its row and
keeps its id, so a rerun never duplicates a gallery row. The ids are read back
in the same transaction and become the rows' ``remote_id``.

The password is a ``SecretStr`` kept out of the URL; :meth:`GalleryDatabase.safe_url`
is the only form that reaches logs and errors.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr, field_validator
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from galleryflow.core.photo_facts import CameraFacts

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
UPSERT_BATCH = 500
# A deadlock rolls the whole transaction back; InnoDB's manual says to "be prepared to
# re-issue a transaction if it fails due to deadlock". Two runs publishing new names at
# once meet one: the owner check's SELECT … FOR UPDATE takes gap locks on names not yet
# in the table, then both insert into the gaps the other holds. The upsert is idempotent
# and owner-checked, so it is simply run again (a lock wait timeout, 1205, is not: it
# already waited innodb_lock_wait_timeout and stays GalleryUnavailable, retry later).
UPSERT_ATTEMPTS = 6
_DEADLOCK_MYSQL = 1213           # ER_LOCK_DEADLOCK
_DEADLOCK_SQLSTATES = {"40P01", "40001"}  # PostgreSQL: deadlock_detected, serialization_failure
# Query parameters drivers accept a secret in (pymysql, psycopg, ODBC and friends).
_SECRET_PARAMS = {"password", "passwd", "pwd", "pass", "secret", "token", "access_token",
                  "api_key", "apikey", "auth_token", "sslpassword", "private_key"}


class GalleryError(RuntimeError):
    """The gallery database refused a statement (schema, data): not a network blip."""


class GalleryUnavailable(GalleryError):
    """The gallery database could not be reached or dropped the connection: retry later."""


class GalleryRecord(CameraFacts):
    """One published image as the site sees it (width and height: the published image)."""

    file_name: str
    source_key: str = Field(description="set_key/original_name: which photo owns the name.")
    set_name: str | None = None
    title: str | None = None
    caption: str | None = None
    alt_text: str | None = None
    keywords: list[str] = Field(default_factory=list)
    subject: str | None = None
    location: str | None = None
    thumb_width: int | None = None
    thumb_height: int | None = None
    image_path: str
    thumbnail_path: str
    image_url: str
    thumbnail_url: str
    image_bytes: int | None = None
    image_sha256: str | None = None
    published_at: datetime


# record field, gallery column (the site's naming: File_Name style), column type; in
# the table's column order
GALLERY_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("file_name", "File_Name", String(255)),
    ("source_key", "Source_Key", String(512)),
    ("set_name", "Set_Name", String(255)),
    ("title", "Title", String(255)),
    ("caption", "Caption", Text),
    ("alt_text", "Alt_Text", Text),
    ("keywords", "Keywords", Text),
    ("subject", "Subject", String(255)),
    ("location", "Location", String(255)),
    ("taken_at", "Taken_At", DateTime),
    ("camera_make", "Camera_Make", String(128)),
    ("camera_model", "Camera_Model", String(128)),
    ("lens", "Lens", String(255)),
    ("exposure_time", "Exposure_Time", String(32)),
    ("f_number", "F_Number", Float),
    ("iso", "ISO", Integer),
    ("focal_length", "Focal_Length", Float),
    ("gps_lat", "GPS_Lat", Float),
    ("gps_lon", "GPS_Lon", Float),
    ("gps_alt", "GPS_Alt", Float),
    ("width", "Width", Integer),
    ("height", "Height", Integer),
    ("thumb_width", "Thumb_Width", Integer),
    ("thumb_height", "Thumb_Height", Integer),
    ("image_path", "Image_Path", String(1024)),
    ("thumbnail_path", "Thumbnail_Path", String(1024)),
    ("image_url", "Image_URL", String(1024)),
    ("thumbnail_url", "Thumbnail_URL", String(1024)),
    ("image_bytes", "Image_Bytes", BigInteger),
    ("image_sha256", "Image_Sha256", String(64)),
    ("published_at", "Published_At", DateTime),
)
COLUMN_NAMES: dict[str, str] = {field: column for field, column, _ in GALLERY_COLUMNS}
# SQLite compares text byte for byte; MySQL/MariaDB's default collations ignore case.
# A table galleryflow creates on SQLite folds case in its key too (NOCASE), so the
# key means the same on every database: `sunset.jpg` and `Sunset.jpg` are one name.
_FILE_NAME_TYPE = String(255).with_variant(String(255, collation="NOCASE"), "sqlite")


def fold(file_name: str) -> str:
    """A file name as the gallery's collation compares it (web names are ASCII)."""
    return file_name.lower()


class UpsertResult(BaseModel):
    """What one bulk upsert did: the gallery id per file name written, and the names
    refused because another photo (or the site itself) holds them."""

    ids: dict[str, str] = Field(default_factory=dict)
    refused: dict[str, str] = Field(default_factory=dict)  # file name -> why


def record_values(record: GalleryRecord, updated_at: datetime) -> dict[str, Any]:
    values = {COLUMN_NAMES[k]: v for k, v in record.model_dump().items()}
    values["Keywords"] = ", ".join(record.keywords)  # sites print or split a plain list
    values["Updated_At"] = updated_at
    return values


def gallery_table(name: str, metadata: MetaData | None = None) -> Table:
    """The gallery table's definition (used to create it and to write to it)."""
    return Table(
        name,
        metadata or MetaData(),
        Column(
            "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        *(Column(column, _FILE_NAME_TYPE if column == "File_Name" else kind,
                 nullable=column != "File_Name")
          for _, column, kind in GALLERY_COLUMNS),
        Column("Updated_At", DateTime),
        UniqueConstraint("File_Name", name=f"uq_{name}_file_name"),
        mysql_charset="utf8mb4",
        mysql_engine="InnoDB",
    )


class GalleryDatabase(Block):
    """The site's database (any SQLAlchemy URL; MySQL/MariaDB via pymysql)."""

    _block_type_name = "Gallery Database"
    _block_type_slug = "gallery-database"
    _description = "galleryflow: the website's gallery table, upserted on File_Name."

    url: str = Field(
        description="SQLAlchemy URL without the password, "
        "e.g. mysql+pymysql://site@db.example.com/site?charset=utf8mb4"
    )
    password: SecretStr | None = Field(default=None, description="Database password.")
    table: str = Field(default="gallery", description="Gallery table name.")
    connect_timeout: int = Field(default=10, ge=1)

    @field_validator("table")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if not _TABLE_NAME.match(value):
            raise ValueError(f"gallery table name {value!r} must be a plain SQL identifier")
        return value

    def safe_url(self) -> str:
        """The URL for logs and errors: no password, neither ``user:password@`` nor a
        secret passed as a query parameter (``?password=…``, ``?token=…``)."""
        url = make_url(self.url)
        secret = {k: "***" for k in url.query if k.lower() in _SECRET_PARAMS}
        if secret:
            url = url.update_query_dict(secret)
        return url.render_as_string(hide_password=True)

    def engine(self) -> Engine:
        url = make_url(self.url)
        if self.password is not None:
            url = url.set(password=self.password.get_secret_value())
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = 30
        elif url.get_backend_name() in ("mysql", "mariadb"):
            connect_args.update(
                connect_timeout=self.connect_timeout, read_timeout=120, write_timeout=120
            )
        # One connection per chunk, closed after: no pool to keep sockets open between chunks.
        return create_engine(url, poolclass=NullPool, connect_args=connect_args)

    @contextmanager
    def connect(self) -> Iterator["GalleryConnection"]:
        """One connection for a chunk (raises :class:`GalleryUnavailable` when down)."""
        engine = self.engine()
        try:
            with _translated(self.safe_url(), "connect"):
                connection = engine.connect()
            try:
                yield GalleryConnection(connection, self.table, self.safe_url())
            finally:
                try:
                    connection.close()
                except Exception:  # a dead connection: nothing left to close properly
                    pass
        finally:
            engine.dispose()


def deadlocked(exc: sa_exc.DBAPIError) -> bool:
    """Whether the database rolled the transaction back to break a deadlock (MySQL/MariaDB
    1213, PostgreSQL 40P01/40001): the transaction may be run again as it was."""
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and args[0] == _DEADLOCK_MYSQL:
        return True
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in _DEADLOCK_SQLSTATES


@contextmanager
def _translated(where: str, what: str) -> Iterator[None]:
    """Turn driver errors into GalleryUnavailable (network) or GalleryError (everything else)."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError) as exc:
        cause = getattr(exc, "orig", None) or exc
        raise GalleryUnavailable(f"gallery database {where}: {what}: {cause}") from None
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise GalleryUnavailable(f"gallery database {where}: {what}: {exc.orig}") from None
        raise GalleryError(f"gallery database {where}: {what}: {exc.orig}") from None
    except sa_exc.SQLAlchemyError as exc:
        raise GalleryError(f"gallery database {where}: {what}: {exc}") from None


class GalleryConnection:
    def __init__(self, connection: Connection, table_name: str, where: str) -> None:
        self.connection = connection
        self.table = gallery_table(table_name)
        self.where = where

    @property
    def dialect(self) -> str:
        return self.connection.dialect.name

    def ensure_table(self) -> None:
        """Create the gallery table when missing; check an existing one has our columns
        and a unique key on ``File_Name`` (created when the table allows it)."""
        with _translated(self.where, f"create table {self.table.name}"):
            self.table.metadata.create_all(self.connection, checkfirst=True)
            self.connection.commit()
            present = {
                c["name"].lower() for c in inspect(self.connection).get_columns(self.table.name)
            }
        missing = [c.name for c in self.table.columns if c.name.lower() not in present]
        if missing:
            raise GalleryError(
                f"gallery database {self.where}: table {self.table.name} exists but lacks the "
                f"columns {', '.join(missing)}; add them or choose another publish.gallery_table"
            )
        self._ensure_unique_file_name()

    def _has_unique_file_name(self) -> bool:
        insp = inspect(self.connection)
        keys = [u["column_names"] for u in insp.get_unique_constraints(self.table.name)]
        keys += [i["column_names"] for i in insp.get_indexes(self.table.name) if i.get("unique")]
        return any([c.lower() for c in cols if c] == ["file_name"] for cols in keys)

    def _ensure_unique_file_name(self) -> None:
        """Without a unique key on File_Name the upsert inserts a second row for a name
        instead of updating it (a resumed publish duplicated rows that way): create the
        key when no two rows share a name, else refuse with the statement to run."""
        t = self.table.name
        with _translated(self.where, f"inspect keys of {t}"):
            if self._has_unique_file_name():
                return
            dupes = [
                name for name, in self.connection.execute(text(
                    f"SELECT MIN(File_Name) FROM {t} GROUP BY LOWER(File_Name) HAVING COUNT(*) > 1"))
            ]
            self.connection.commit()
        statement = f"ALTER TABLE {t} ADD CONSTRAINT uq_{t}_file_name UNIQUE (File_Name)"
        if dupes:
            raise GalleryError(
                f"gallery database {self.where}: table {t} has no unique key on File_Name and "
                f"holds some names more than once ({', '.join(dupes[:10])}); publishing would "
                f"add more. Remove the extra rows, then run: {statement};")
        try:
            with _translated(self.where, f"create the unique key on {t}.File_Name"):
                self.connection.execute(text(
                    f"CREATE UNIQUE INDEX uq_{t}_file_name ON {t} (File_Name)"))
                self.connection.commit()
        except GalleryError as exc:
            raise GalleryError(
                f"{exc}. Table {t} needs a unique key on File_Name before anything is "
                f"published into it; run: {statement};") from None

    def owners(self, file_names: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """For the names already in the gallery, compared the way the gallery's
        collation compares them (case-folded): folded name -> (its File_Name as
        stored, its Source_Key)."""
        if not file_names:
            return {}
        with _translated(self.where, "read existing names"):
            owners = self._owners(file_names)
            self.connection.commit()
        return owners

    def _owners(self, file_names: Sequence[str], lock: bool = False) -> dict[str, tuple[str, str | None]]:
        t = self.table
        query = select(t.c.File_Name, t.c.Source_Key).where(
            func.lower(t.c.File_Name).in_(sorted({fold(n) for n in file_names})))
        if lock and self.dialect in ("mysql", "mariadb", "postgresql"):
            query = query.with_for_update()
        return {fold(name): (name, key) for name, key in self.connection.execute(query)}

    def upsert(self, records: Sequence[GalleryRecord], now: datetime) -> UpsertResult:
        """Insert or update ``records`` keyed on File_Name, in one transaction that first
        checks (and on MySQL/MariaDB and PostgreSQL locks) who owns each name.

        A name held by another photo or by the site itself (another Source_Key, or the
        same name in another case: the gallery's collation ignores case) is refused,
        never overwritten; the update itself is guarded by the owner too, so even a
        writer racing this one cannot make it overwrite a row it does not own. When the
        database breaks a deadlock with another writer by rolling this transaction back,
        it is run again (up to ``UPSERT_ATTEMPTS`` times).
        """
        if not records:
            return UpsertResult()
        with _translated(self.where, f"upsert into {self.table.name}"):
            for attempt in range(1, UPSERT_ATTEMPTS + 1):
                try:
                    return self._upsert_once(records, now)
                except sa_exc.DBAPIError as exc:
                    if attempt == UPSERT_ATTEMPTS or not deadlocked(exc):
                        raise
                    self.connection.rollback()
                    # Jittered so the two writers do not meet again at the same moment.
                    time.sleep(random.uniform(0.005, 0.03) * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _upsert_once(self, records: Sequence[GalleryRecord], now: datetime) -> UpsertResult:
        result = UpsertResult()
        owners = self._owners([r.file_name for r in records], lock=True)
        mine = []
        for record in records:
            held = owners.get(fold(record.file_name))
            if held is not None and (held[0] != record.file_name or held[1] != record.source_key):
                result.refused[record.file_name] = (
                    f"the gallery already holds {held[0]} for "
                    f"{held[1] or 'a row the site made itself'}; not overwritten")
            else:
                mine.append(record)
        rows = [record_values(r, now) for r in mine]
        for start in range(0, len(rows), UPSERT_BATCH):
            self.connection.execute(self._upsert_statement(rows[start : start + UPSERT_BATCH]))
        t = self.table
        wanted = {r.file_name: r.source_key for r in mine}
        for row_id, name, key in self.connection.execute(
            select(t.c.id, t.c.File_Name, t.c.Source_Key).where(
                func.lower(t.c.File_Name).in_(sorted({fold(n) for n in wanted})))
        ):
            if name in wanted and key == wanted[name]:
                result.ids[name] = str(row_id)
        for name in wanted:
            if name not in result.ids:
                result.refused[name] = "another writer holds this name in the gallery; not overwritten"
        self.connection.commit()
        return result

    def _upsert_statement(self, rows: list[dict[str, Any]]) -> Any:
        t = self.table
        # Source_Key is the owner: never updated, and every other column only where the
        # row already belongs to the same photo.
        update = [c.name for c in t.columns if c.name not in ("id", "File_Name", "Source_Key")]
        if self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            stmt = mysql_insert(t).values(rows)
            same_owner = t.c.Source_Key.op("<=>")(stmt.inserted.Source_Key)
            return stmt.on_duplicate_key_update(
                {c: case((same_owner, stmt.inserted[c]), else_=t.c[c]) for c in update})
        if self.dialect in ("sqlite", "postgresql"):
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert

            stmt = dialect_insert(t).values(rows)
            return stmt.on_conflict_do_update(
                index_elements=[t.c.File_Name], set_={c: stmt.excluded[c] for c in update},
                where=t.c.Source_Key == stmt.excluded.Source_Key,
            )
        raise GalleryError(
            f"gallery database {self.where}: dialect {self.dialect!r} has no upsert here "
            "(MySQL/MariaDB, SQLite and PostgreSQL are supported)"
        )

    def rows(self) -> list[dict[str, Any]]:
        """Every gallery row (for checks and tests; a site's table is small)."""
        with _translated(self.where, "read"):
            result = [dict(r._mapping) for r in self.connection.execute(select(self.table))]
            self.connection.commit()
        return result
