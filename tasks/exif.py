"""Stage 3: EXIF with exifread.

Date taken, camera, lens, exposure, aperture, ISO, focal length, GPS and
orientation; width and height *after* orientation. A file without EXIF (or with
damaged EXIF) still gets a row: the fields stay empty and the reason is noted.

The extraction is a pure function of the file's bytes, so its task is cached on
content (``CONTENT``): a rerun reads no EXIF twice.
"""

from __future__ import annotations

import html
import logging
import re
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
from galleryflow.core.workers import map_all

log = logging.getLogger(__name__)


class ExifInput(BaseModel):
    sha256: str
    path: str


class ExifData(CameraFacts):
    """What stage 3 reads from one file: the camera facts, plus its orientation."""

    sha256: str
    orientation: int | None = None
    # The camera's and the photographer's own text fields: keyword evidence for stage 7.
    embedded_text: dict[str, str] | None = None
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


_EXIF_TEXT = {"ImageDescription": "Image ImageDescription", "UserComment": "EXIF UserComment",
              "XPKeywords": "Image XPKeywords", "XPSubject": "Image XPSubject",
              "XPComment": "Image XPComment", "XPTitle": "Image XPTitle"}
# IPTC-IIM datasets (record 2) worth reading: keywords, caption, headline, place.
_IPTC = {(2, 25): "IPTC Keywords", (2, 120): "IPTC Caption", (2, 105): "IPTC Headline",
         (2, 90): "IPTC City", (2, 95): "IPTC State", (2, 101): "IPTC Country",
         (2, 92): "IPTC Sublocation"}
_XMP_BAG = re.compile(r"<dc:(subject|description|title)>(.*?)</dc:\1>", re.S)
_XMP_LI = re.compile(r"<rdf:li[^>]*>(.*?)</rdf:li>", re.S)
_XMP_ATTR = re.compile(r'photoshop:(City|State|Country|Headline)="([^"]*)"')


def _decode_text(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], int):  # XP* tags: UCS-2 bytes
        value = bytes(value).decode("utf-16-le", "ignore")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "ignore")
    text = str(value).replace("\x00", " ")
    text = re.sub(r"^(ASCII|UNICODE|JIS)\s*", "", text.strip())
    return " ".join(text.split())[:500]


def read_embedded_text(path: Path, tags: dict[str, Any]) -> dict[str, str]:
    """The original's own text fields: EXIF ImageDescription/UserComment/XP*, IPTC-IIM
    keywords, caption and place, XMP dc:subject/description and photoshop place fields."""
    found: dict[str, str] = {}
    for name, key in _EXIF_TEXT.items():
        tag = tags.get(key)
        if tag is not None:
            raw = tag.values if name.startswith("XP") else getattr(tag, "printable", tag)
            text = _decode_text(raw)
            if text and not set(text) <= set(" ."):
                found[name] = text
    try:
        from PIL import IptcImagePlugin, Image

        with Image.open(path) as img:
            iptc = IptcImagePlugin.getiptcinfo(img) or {}
            xmp = img.info.get("xmp") or b""
        for key, name in _IPTC.items():
            value = iptc.get(key)
            if value:
                values = value if isinstance(value, list) else [value]
                text = ", ".join(_decode_text(v) for v in values if v)
                if text:
                    found[name] = text[:500]
        packet = xmp.decode("utf-8", "ignore") if isinstance(xmp, bytes) else str(xmp)
        for kind, body in _XMP_BAG.findall(packet):
            items = [html.unescape(" ".join(li.split())) for li in _XMP_LI.findall(body)]
            if items:
                found[f"XMP {kind}"] = ", ".join(i for i in items if i)[:500]
        for kind, value in _XMP_ATTR.findall(packet):
            if value.strip():
                found[f"XMP {kind}"] = html.unescape(value.strip())[:200]
    except Exception as exc:  # a damaged IPTC/XMP block is no reason to lose the row
        log.debug("%s: IPTC/XMP unreadable: %s", path, exc)
    return found


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
    data.embedded_text = read_embedded_text(path, tags) or None
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

    return map_all(one, items, settings.threads)  # the process's pool, shared by chunks
