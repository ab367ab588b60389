"""Sample photo sets: realistic, textured JPEGs with real EXIF, plus bad files.

Used by ``galleryflow demo``, the tests and the benchmarks, so every one of them
works on a fresh machine with no photos of its own. Images are procedural
landscapes (sky gradient, sun, hills, noise texture) so JPEG sizes, decode times
and quality scores behave like photographs rather than flat colour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

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
