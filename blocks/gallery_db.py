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

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator
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
    create_engine,
    inspect,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from galleryflow.core.photo_facts import CameraFacts

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
UPSERT_BATCH = 500


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
        *(Column(column, kind, nullable=column != "File_Name")
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
        return make_url(self.url).render_as_string(hide_password=True)

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
        """Create the gallery table when missing; check an existing one has our columns."""
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

    def owners(self, file_names: Sequence[str]) -> dict[str, str | None]:
        """File_Name -> Source_Key for the names already in the gallery."""
        if not file_names:
            return {}
        t = self.table
        with _translated(self.where, "read existing names"):
            result = self.connection.execute(
                select(t.c.File_Name, t.c.Source_Key).where(t.c.File_Name.in_(list(file_names)))
            )
            owners = {name: key for name, key in result}
            self.connection.commit()
        return owners

    def upsert(self, records: Sequence[GalleryRecord], now: datetime) -> dict[str, str]:
        """Insert or update ``records`` keyed on File_Name; return File_Name -> remote id."""
        if not records:
            return {}
        rows = [record_values(r, now) for r in records]
        with _translated(self.where, f"upsert into {self.table.name}"):
            for start in range(0, len(rows), UPSERT_BATCH):
                self.connection.execute(self._upsert_statement(rows[start : start + UPSERT_BATCH]))
            t = self.table
            names = [r.file_name for r in records]
            ids = {
                name: str(row_id)
                for row_id, name in self.connection.execute(
                    select(t.c.id, t.c.File_Name).where(t.c.File_Name.in_(names))
                )
            }
            self.connection.commit()
        return ids

    def _upsert_statement(self, rows: list[dict[str, Any]]) -> Any:
        t = self.table
        update = [c.name for c in t.columns if c.name not in ("id", "File_Name")]
        if self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            stmt = mysql_insert(t).values(rows)
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
        if self.dialect in ("sqlite", "postgresql"):
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert

            stmt = dialect_insert(t).values(rows)
            return stmt.on_conflict_do_update(
                index_elements=[t.c.File_Name], set_={c: stmt.excluded[c] for c in update}
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
