"""Sample photo sets: realistic, textured JPEGs with real EXIF, plus bad files.

Used by ``galleryflow demo``, the tests and the benchmarks, so every one of them
works on a fresh machine with no photos of its own. Images are procedural
landscapes (sky gradient, sun, hills, noise texture) so JPEG sizes, decode times
and quality scores behave like photographs rather than flat colour.

- :func:`write_sample`: one JPEG from a :class:`SampleSpec`;
- :func:`make_set`: a small set of them (one shoot: times, GPS on every other photo);
- :func:`demo_sets`: the demo's two sets and its bad files;
- :func:`insert_set`: a set put straight into galleryflow's DB as stages 1–4 leave
  it (incoming copies, one ``review_queue`` row each), for the tests and benchmarks
  that start at a later stage.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from galleryflow.core.fsutil import FileStamp, copy_verified
from galleryflow.core.status import RowStatus, SetStatus
from galleryflow.db import ImageSet, Photo, session_scope

if TYPE_CHECKING:
    from galleryflow.core.settings import Settings

CAMERAS = [
    ("Canon", "Canon EOS R6", "RF24-105mm F4 L IS USM"),
    ("NIKON CORPORATION", "NIKON Z 6_2", "NIKKOR Z 24-70mm f/4 S"),
    ("FUJIFILM", "X-T4", "XF16-55mmF2.8 R LM WR"),
    ("SONY", "ILCE-7M3", "FE 35mm F1.8"),
]


@dataclass
class SampleSpec:
    """One sample image: its size, time and optional GPS / orientation."""

    name: str
    width: int = 3000
    height: int = 2000
    taken_at: datetime = field(default_factory=lambda: datetime(2026, 6, 14, 9, 30))
    camera: tuple[str, str, str] = CAMERAS[0]
    gps: tuple[float, float, float] | None = None
    orientation: int = 1
    seed: int = 0
    quality: int = 90


def _landscape(width: int, height: int, hour: float, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Light follows the hour: night is dark blue, noon bright, dusk orange.
    daylight = max(0.0, np.sin(np.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
    warm = 1.0 - abs(daylight - 0.5) * 2 if daylight > 0 else 0.0
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    sky_top = np.array([20 + 60 * daylight, 30 + 110 * daylight, 70 + 170 * daylight])
    sky_low = np.array([40 + 200 * daylight + 60 * warm, 40 + 170 * daylight, 80 + 150 * daylight])
    sky = sky_top[None, None, :] * (1 - y[..., None]) + sky_low[None, None, :] * y[..., None]
    img = np.broadcast_to(sky, (height, width, 3)).astype(np.float32).copy()
    # A sun (or moon) disc.
    cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.35)
    dist = np.sqrt((x - cx) ** 2 * (width / height) ** 2 + (y - cy) ** 2)
    img += (np.clip(0.06 - dist, 0, None) / 0.06)[..., None] * (120 + 120 * daylight)
    # Two ranges of hills with a rough ridge line.
    for layer, (base, colour) in enumerate(
        [(0.55, (40, 90, 50)), (0.72, (30, 70, 35))]
    ):
        phase = rng.uniform(0, 6.28, 3)
        ridge = base + 0.06 * np.sin(6 * x + phase[0]) + 0.03 * np.sin(17 * x + phase[1])
        ridge = ridge + 0.01 * np.sin(53 * x + phase[2])
        mask = (y > ridge).astype(np.float32)
        shade = (0.35 + 0.65 * daylight) * (1.0 - 0.15 * layer)
        img = img * (1 - mask[..., None]) + mask[..., None] * np.array(colour) * shade * 1.6
    # Texture: coarse blotches plus fine grain, as foliage and sensor noise give.
    small = rng.normal(0, 1, (height // 16 + 1, width // 16 + 1)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(small, "F").resize((width, height), Image.Resampling.BICUBIC))
    img += coarse[..., None] * 12 + rng.normal(0, 5, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _rational(value: float) -> IFDRational:
    return IFDRational(round(value * 10000), 10000)


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return IFDRational(degrees, 1), IFDRational(minutes, 1), _rational(seconds)


def build_exif(spec: SampleSpec) -> Image.Exif:
    exif = Image.Exif()
    make, model, lens = spec.camera
    exif[ExifTags.Base.Make] = make
    exif[ExifTags.Base.Model] = model
    exif[ExifTags.Base.Orientation] = spec.orientation
    exif[ExifTags.Base.Software] = "galleryflow sample generator"
    stamp = spec.taken_at.strftime("%Y:%m:%d %H:%M:%S")
    exif[ExifTags.Base.DateTime] = stamp
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    ifd[ExifTags.Base.DateTimeOriginal] = stamp
    ifd[ExifTags.Base.LensModel] = lens
    ifd[ExifTags.Base.ExposureTime] = IFDRational(1, random.Random(spec.seed).choice([60, 125, 250, 500]))
    ifd[ExifTags.Base.FNumber] = _rational(random.Random(spec.seed + 1).choice([2.8, 4.0, 5.6, 8.0]))
    ifd[ExifTags.Base.ISOSpeedRatings] = random.Random(spec.seed + 2).choice([100, 200, 400, 800])
    ifd[ExifTags.Base.FocalLength] = _rational(random.Random(spec.seed + 3).choice([24, 35, 50, 85]))
    if spec.gps:
        lat, lon, alt = spec.gps
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps[ExifTags.GPS.GPSVersionID] = b"\x02\x03\x00\x00"
        gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        gps[ExifTags.GPS.GPSLatitude] = _dms(lat)
        gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        gps[ExifTags.GPS.GPSLongitude] = _dms(lon)
        gps[ExifTags.GPS.GPSAltitudeRef] = 0
        gps[ExifTags.GPS.GPSAltitude] = _rational(alt)
    return exif


def write_sample(path: Path, spec: SampleSpec, exif: bool = True) -> Path:
    hour = spec.taken_at.hour + spec.taken_at.minute / 60
    img = _landscape(spec.width, spec.height, hour, spec.seed)
    # Store the pixels the way a camera held sideways does, so that applying the
    # EXIF orientation (exif_transpose) shows the upright landscape again.
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
               8: Image.Transpose.ROTATE_270}.get(spec.orientation)
    if inverse is not None:
        img = img.transpose(inverse)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": spec.quality}
    if exif:
        kwargs["exif"] = build_exif(spec)
    img.save(path, "JPEG", **kwargs)
    return path


def make_set(root: Path, name: str, count: int, size: tuple[int, int] = (960, 640),
             start: datetime = datetime(2026, 6, 14, 9, 0), gps: bool = True) -> Path:
    """A small set ``root/name`` of real, textured JPEGs with EXIF; fast enough for unit
    tests. Photos are 30 minutes apart from ``start``; every other one has GPS."""
    folder = root / name
    for i in range(count):
        spec = SampleSpec(
            name=f"{name}-{i + 1:02d}.jpg", width=size[0], height=size[1],
            taken_at=start + timedelta(minutes=30 * i), seed=zlib.crc32(f"{name}/{i}".encode()) % 10_000,
            gps=(46.5 + i * 0.01, 7.9, 1500.0) if gps and i % 2 == 0 else None,
        )
        write_sample(folder / spec.name, spec)
    return folder


def demo_sets(root: Path, megapixels: float = 6.0, per_set: int = 6, bad_files: bool = True) -> list[Path]:
    """Write the demo's sample sets under ``root``; returns the set folders."""
    aspect = 1.5
    height = int((megapixels * 1_000_000 / aspect) ** 0.5)
    width = int(height * aspect)
    sets = [
        ("alpine-lakes", datetime(2026, 7, 3, 5, 40), (46.5475, 7.9853, 2061.0)),
        ("harbour-evening", datetime(2026, 9, 18, 17, 10), None),
    ]
    folders = []
    for set_index, (name, start, gps) in enumerate(sets):
        folder = root / name
        for i in range(per_set):
            spec = SampleSpec(
                name=f"{name}-{i + 1:02d}.jpg",
                width=width,
                height=height,
                taken_at=start + timedelta(minutes=47 * i),
                camera=CAMERAS[(set_index + i) % len(CAMERAS)],
                gps=(gps[0] + i * 0.001, gps[1] - i * 0.001, gps[2]) if gps and i % 2 == 0 else None,
                orientation=6 if i == 2 else 1,
                seed=set_index * 100 + i,
            )
            write_sample(folder / spec.name, spec, exif=not (set_index == 1 and i == per_set - 1))
        folders.append(folder)
    if bad_files:
        bad = root / "harbour-evening"
        (bad / "notes-not-a-photo.jpg").write_text("shopping list: film, batteries\n")
        (bad / "empty.jpg").write_bytes(b"")
        good = (root / "alpine-lakes" / "alpine-lakes-01.jpg").read_bytes()
        (bad / "truncated.jpg").write_bytes(good[: len(good) // 3])
        # A PNG saved as .jpg: goes on under its real format, with a warning.
        Image.new("RGB", (1200, 800), (120, 140, 160)).save(bad / "mislabelled-scan.jpg", "PNG")
    return folders


# --- sample sets as rows ---------------------------------------------------------------


@dataclass
class InsertedSet:
    """A set put into the DB by :func:`insert_set`: its session (the ``image_set`` row),
    its rows in file order, its key and the folder it came from."""

    image_set_id: int
    row_ids: list[int]
    set_key: str
    folder: Path


# The legal steps from ``new`` to each status. A seeded row reaches its status through
# the status machine (Photo checks every assignment), as the stages would move it.
_STEPS: dict[str, tuple[str, ...]] = {
    RowStatus.NEW: (),
    RowStatus.SCORED: ("scored",),
    RowStatus.CAPTIONED: ("scored", "captioned"),
    RowStatus.AWAITING_REVIEW: ("scored", "captioned", "awaiting_review"),
    RowStatus.APPROVED: ("scored", "captioned", "awaiting_review", "approved"),
    RowStatus.REJECTED: ("scored", "captioned", "awaiting_review", "rejected"),
    RowStatus.PUBLISHED: ("scored", "captioned", "awaiting_review", "approved", "published"),
    RowStatus.FAILED: ("failed",),
}


def read_fields(path: Path) -> dict[str, Any]:
    """Format, pixel size, orientation, date, camera, lens and GPS position of a photo,
    read from its EXIF with Pillow: the columns a seeded row gets from its file."""
    with Image.open(path) as img:
        exif = img.getexif()
        width, height = img.size
        image_format = img.format
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    fields: dict[str, Any] = {"image_format": image_format, "width": width, "height": height,
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


def insert_set(
    settings: Settings,
    root: Path | None = None,
    name: str = "test-set",
    count: int | None = None,
    *,
    files: Sequence[Path] | None = None,
    size: tuple[int, int] = (640, 480),
    status: str = RowStatus.SCORED,
    statuses: Mapping[str, str] | None = None,
    exif: bool = True,
    location: str | None = None,
    subject: str | None = None,
    per_row: Sequence[Mapping[str, Any]] = (),
    **row_values: Any,
) -> InsertedSet:
    """A set in galleryflow's DB as stages 1–4 leave it, without running them.

    The photos are a new :func:`make_set` of ``count`` images of ``size`` under
    ``root/name`` (``count`` defaults to ``len(per_row)``, else 3), or the given
    ``files`` (any kind of file: odd images, broken ones) in their order. Each is
    copied, verified, to ``incoming/<name>/`` and gets one ``review_queue`` row of an
    ``image_set`` session named ``name`` (with ``location`` and ``subject``).

    - ``status``: every row's status, reached by legal transitions from ``new``;
      ``statuses`` overrides it per file name, a ``status`` in ``per_row`` per row.
    - ``exif``: the columns read from each file (format, size, date, camera, lens,
      GPS position; see :func:`read_fields`). ``False`` for files that are no
      photos: their rows carry names, paths, sha256 and the copy's stamp only.
      Every row gets its incoming copy's stamp (``file_size``, ``file_mtime_ns``),
      as intake records it.
    - ``per_row``: column values row by row (file order), over ``row_values``, which
      every row gets.
    """
    if files is None:
        if root is None:
            raise ValueError("insert_set needs a root to write the set in, or files")
        count = count if count is not None else (len(per_row) or 3)
        folder = make_set(root, name, count, size=size)
        sources = sorted(folder.glob("*.jpg"))
    else:
        if root is not None or count is not None:
            raise ValueError("insert_set takes files, or a root and a count to write them")
        sources = list(files)
        folder = sources[0].parent
    if per_row and len(per_row) != len(sources):
        raise ValueError(f"per_row has {len(per_row)} entries for {len(sources)} files")
    incoming = settings.incoming_dir / name
    with session_scope(settings.db_url) as session:
        # A committed session (as a finished run leaves it): rows of a session still
        # running are shown to no reviewer and never published.
        image_set = ImageSet(set_key=name, name=name, source_dir=str(folder), location=location,
                             subject=subject, image_count=len(sources),
                             status=SetStatus.COMPLETED)
        session.add(image_set)
        session.flush()
        rows = []
        for index, source in enumerate(sources):
            values = {**row_values, **(per_row[index] if per_row else {})}
            target = values.pop("status", (statuses or {}).get(source.name, status))
            copy = incoming / source.name
            sha = copy_verified(source, copy)
            stamp = FileStamp.of(copy)  # as intake records it
            values = {"file_size": stamp.size, "file_mtime_ns": stamp.mtime_ns, **values}
            if exif:
                values = {**read_fields(source), **values}
            row = Photo(
                set_key=name, original_name=source.name, image_set_id=image_set.id,
                created_session_id=image_set.id, sha256=sha, source_path=str(source),
                incoming_path=str(copy), **values,
            )
            row.status = RowStatus.NEW
            for step in _STEPS[RowStatus(target)]:
                row.status = step  # through the status machine, one legal step at a time
            session.add(row)
            rows.append(row)
        session.flush()
        return InsertedSet(image_set_id=image_set.id, row_ids=[r.id for r in rows], set_key=name,
                           folder=folder)
