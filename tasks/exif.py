"""Stage 3: EXIF with exifread.

Date taken, camera, lens, exposure, aperture, ISO, focal length, GPS and
orientation; width and height *after* orientation. A file without EXIF (or with
damaged EXIF) still gets a row: the fields stay empty and the reason is noted.

The extraction is a pure function of the file's bytes, so its task is cached on
content (``CONTENT``): a rerun reads no EXIF twice.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import exifread
from prefect import task
from pydantic import BaseModel

from galleryflow.core.caching import CONTENT
from galleryflow.imaging.decode import read_header
from galleryflow.imaging.geometry import oriented_size
from galleryflow.core.photo_facts import CameraFacts
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import get_settings

log = logging.getLogger(__name__)


class ExifInput(BaseModel):
    sha256: str
    path: str


class ExifData(CameraFacts):
    """What stage 3 reads from one file: the camera facts, plus its orientation."""

    sha256: str
    orientation: int | None = None
    note: str | None = None  # why fields are empty, if they are

    def row_values(self) -> dict[str, Any]:
        return self.model_dump(exclude={"sha256", "note"})


def _text(tags: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        if key in tags:
            value = str(tags[key].printable if hasattr(tags[key], "printable") else tags[key])
            value = value.strip().strip("\x00").strip()
            if value:
                return value[:255]
    return None


def _ratio(value: Any) -> float | None:
    try:
        return float(value.num) / float(value.den) if value.den else None
    except AttributeError:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None


def _first(tags: dict[str, Any], key: str) -> Any:
    tag = tags.get(key)
    if tag is None or not getattr(tag, "values", None):
        return None
    return tag.values[0]


def _date(tags: dict[str, Any]) -> datetime | None:
    for key in ("EXIF DateTimeOriginal", "EXIF DateTimeDigitized", "Image DateTime"):
        raw = _text(tags, key)
        if not raw:
            continue
        for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
            try:
                return datetime.strptime(raw[:19], fmt)
            except ValueError:
                continue
    return None


def _gps_coord(tags: dict[str, Any], key: str, ref_key: str) -> float | None:
    tag = tags.get(key)
    if tag is None or len(getattr(tag, "values", [])) != 3:
        return None
    parts = [_ratio(v) for v in tag.values]
    if any(p is None for p in parts):
        return None
    value = parts[0] + parts[1] / 60 + parts[2] / 3600  # type: ignore[operator]
    ref = _text(tags, ref_key) or ""
    return round(-value if ref.upper().startswith(("S", "W")) else value, 7)


def _exposure(tags: dict[str, Any]) -> str | None:
    value = _first(tags, "EXIF ExposureTime")
    if value is None:
        return None
    seconds = _ratio(value)
    if seconds is None or seconds <= 0:
        return None
    return f"1/{round(1 / seconds)}" if seconds < 1 else f"{seconds:g}"


def read_exif(path: Path, sha256: str) -> ExifData:
    """EXIF fields of one image; never raises for missing or damaged EXIF."""
    data = ExifData(sha256=sha256)
    tags: dict[str, Any] = {}
    try:
        with open(path, "rb") as handle:
            tags = exifread.process_file(handle, details=False, extract_thumbnail=False)
    except Exception as exc:  # exifread raises assorted errors on damaged blocks
        data.note = f"EXIF unreadable: {exc}"
    if not tags and data.note is None:
        data.note = "no EXIF"
    data.taken_at = _date(tags)
    data.camera_make = _text(tags, "Image Make")
    data.camera_model = _text(tags, "Image Model")
    data.lens = _text(tags, "EXIF LensModel", "MakerNote LensModel", "EXIF LensSpecification")
    data.exposure_time = _exposure(tags)
    aperture = _first(tags, "EXIF FNumber")
    data.f_number = round(_ratio(aperture), 2) if aperture is not None and _ratio(aperture) else None
    iso = _first(tags, "EXIF ISOSpeedRatings") or _first(tags, "EXIF PhotographicSensitivity")
    data.iso = int(iso) if isinstance(iso, int) and iso > 0 else None
    focal = _first(tags, "EXIF FocalLength")
    data.focal_length = round(_ratio(focal), 1) if focal is not None and _ratio(focal) else None
    data.gps_lat = _gps_coord(tags, "GPS GPSLatitude", "GPS GPSLatitudeRef")
    data.gps_lon = _gps_coord(tags, "GPS GPSLongitude", "GPS GPSLongitudeRef")
    altitude = _first(tags, "GPS GPSAltitude")
    if altitude is not None and _ratio(altitude) is not None:
        below = _first(tags, "GPS GPSAltitudeRef") == 1
        data.gps_alt = round(-_ratio(altitude) if below else _ratio(altitude), 1)  # type: ignore[operator]
    orientation = _first(tags, "Image Orientation")
    data.orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None
    try:
        header = read_header(path)
        data.width, data.height = oriented_size(header.width, header.height, data.orientation)
    except OSError as exc:
        data.note = f"{data.note + '; ' if data.note else ''}size unreadable: {exc}"
    return data


@task(name="read-exif", cache_policy=CONTENT, persist_result=True, retries=1)
def read_exif_chunk(items: list[ExifInput]) -> list[ExifData]:
    """Stage 3 for a chunk (pure; cached on the files' content)."""
    settings = get_settings()
    progress = StageProgress("exif", len(items), min_interval=2.0)

    def one(item: ExifInput) -> ExifData:
        try:
            return read_exif(Path(item.path), item.sha256)
        finally:
            progress.advance()

    with ThreadPoolExecutor(max_workers=settings.threads) as pool:
        return list(pool.map(one, items))
