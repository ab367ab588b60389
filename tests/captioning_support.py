"""Shared test helpers for stages 6–7: rows as stages 1–5 leave them, and the stand-in.

Stages 1–5 live in other modules; these helpers put the same state in the DB
directly: an ``image_set`` row for the session, incoming copies of real JPEGs,
and ``review_queue`` rows with the EXIF fields read from the files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from galleryflow.db.engine import session_scope
from galleryflow.db.models import ImageSet, ReviewRow
from galleryflow.core.fsutil import sha256_file
from galleryflow.core.settings import Settings
from galleryflow.core.status import RowStatus
from tests.conftest import make_set
from tests.services.ollama_stub import OllamaStub

PRIMARY = "llava:7b"
FALLBACK = "moondream:latest"


@dataclass
class InsertedSet:
    session_id: int
    row_ids: list[int]
    set_key: str
    folder: Path


def _exif_fields(path: Path) -> dict[str, object]:
    with Image.open(path) as img:
        exif = img.getexif()
        width, height = img.size
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    fields: dict[str, object] = {"width": width, "height": height,
                                 "orientation": exif.get(ExifTags.Base.Orientation)}
    stamp = ifd.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    if stamp:
        fields["taken_at"] = datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S")
    fields["camera_make"] = exif.get(ExifTags.Base.Make)
    fields["camera_model"] = exif.get(ExifTags.Base.Model)
    fields["lens"] = ifd.get(ExifTags.Base.LensModel)
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    if gps.get(ExifTags.GPS.GPSLatitude):
        def deg(values: tuple) -> float:
            d, m, s = (float(v) for v in values)
            return d + m / 60 + s / 3600
        fields["gps_lat"] = deg(gps[ExifTags.GPS.GPSLatitude])
        fields["gps_lon"] = deg(gps[ExifTags.GPS.GPSLongitude])
    return fields


def insert_set(settings: Settings, root: Path, name: str, count: int = 3,
               status: RowStatus = RowStatus.SCORED, location: str | None = None,
               subject: str | None = None, size: tuple[int, int] = (640, 480),
               **row_values: object) -> InsertedSet:
    """A set of real JPEGs with EXIF, copied to incoming/, with one review row each."""
    folder = make_set(root, name, count, size=size)
    with session_scope() as session:
        image_set = ImageSet(set_key=name, name=name, source_dir=str(folder), location=location,
                             subject=subject, image_count=count)
        session.add(image_set)
        session.flush()
        ids = []
        for source in sorted(folder.glob("*.jpg")):
            incoming = settings.incoming_dir / name / source.name
            incoming.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, incoming)
            row = ReviewRow(
                set_key=name, original_name=source.name, image_set_id=image_set.id,
                created_session_id=image_set.id, sha256=sha256_file(source),
                source_path=str(source), incoming_path=str(incoming), image_format="JPEG",
                file_size=source.stat().st_size, status=status,
                **{**_exif_fields(source), **row_values},
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
        return InsertedSet(session_id=image_set.id, row_ids=ids, set_key=name, folder=folder)


def point_at(settings: Settings, stub: OllamaStub, fallback: str | None = None) -> None:
    """Aim the stage at the stand-in, with fast retries and short timeouts."""
    o = settings.ollama
    o.host = stub.host
    o.model = PRIMARY
    o.fallback_model = fallback
    o.timeout_seconds = 5.0
    o.connect_timeout_seconds = 1.0
    o.retry_backoff_seconds = 0.01
    o.request_retries = 2


def rows(row_ids: list[int]) -> list[ReviewRow]:
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    with session_scope() as session:
        found = session.scalars(
            select(ReviewRow).options(selectinload(ReviewRow.proof))
            .where(ReviewRow.id.in_(row_ids)).order_by(ReviewRow.original_name)
        ).all()
        for row in found:
            session.expunge(row)
        return list(found)


@pytest.fixture
def stub() -> Iterator[OllamaStub]:
    with OllamaStub(models=(PRIMARY, FALLBACK), vram_fraction=0.6) as server:
        yield server
