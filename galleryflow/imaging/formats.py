"""The one table of image formats: Pillow's name, file extensions, MIME type, and
whether (and as what) galleryflow writes it.

Every other module asks this table: validation (does the suffix match the
content?), batch inputs (which formats a job accepts, which output a format
becomes by default), the encoder (Pillow's name for an output key, its suffix),
publishing (the MIME of what it uploads). RAW and video are not Pillow formats:
their suffixes live here too so that one place says what a file name means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

# The output keys as a type (schemas, enums); checked against the table below.
OutputKey = Literal["jpeg", "png", "webp", "avif"]


@dataclass(frozen=True)
class ImageFormat:
    pillow: str  # Pillow's format name (``Image.format``)
    extensions: tuple[str, ...]  # lower case, with the dot; the first is the one we write
    mime: str
    key: str | None = None  # our output key when galleryflow can write this format
    lossy: bool = False  # its encoder has a quality setting
    same_as: str | None = None  # the output key that re-encodes it as the same format
    default_output: str = "jpeg"  # what a batch makes of it when no format is asked
    # Written formats only: the quality used when none is asked (AVIF's scale is not
    # JPEG's: q70 AVIF looks like q85 JPEG at well under half the bytes), and a
    # generous guess of output bytes per pixel (noisy photos at high quality) for the
    # free-disk checks.
    default_quality: int | None = None
    bytes_per_pixel: float = 0.0

    @property
    def writable(self) -> bool:
        return self.key is not None


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("JPEG", (".jpg", ".jpeg", ".jpe"), "image/jpeg", "jpeg", True, "jpeg", "jpeg",
                default_quality=85, bytes_per_pixel=0.6),
    # A multi-picture JPEG (many cameras' files): the first picture is a plain JPEG.
    ImageFormat("MPO", (".jpg", ".jpeg"), "image/jpeg", None, False, "jpeg", "jpeg"),
    # 16-bit PNGs: up to 6 bytes a pixel before compression.
    ImageFormat("PNG", (".png",), "image/png", "png", False, "png", "png", bytes_per_pixel=3.2),
    ImageFormat("WEBP", (".webp",), "image/webp", "webp", True, "webp", "webp",
                default_quality=85, bytes_per_pixel=0.45),
    ImageFormat("AVIF", (".avif",), "image/avif", "avif", True, "avif", "avif",
                default_quality=70, bytes_per_pixel=0.3),
    # Lossless inputs we do not write stay lossless: PNG.
    ImageFormat("GIF", (".gif",), "image/gif", default_output="png"),
    ImageFormat("TIFF", (".tif", ".tiff"), "image/tiff", default_output="png"),
    ImageFormat("BMP", (".bmp",), "image/bmp", default_output="png"),
    ImageFormat("HEIF", (".heic", ".heif"), "image/heif"),
)

BY_PILLOW: dict[str, ImageFormat] = {f.pillow: f for f in FORMATS}
BY_KEY: dict[str, ImageFormat] = {f.key: f for f in FORMATS if f.key}

OUTPUT_KEYS: tuple[str, ...] = tuple(BY_KEY)  # jpeg, png, webp, avif
assert OUTPUT_KEYS == get_args(OutputKey), "OutputKey must list the table's output keys"
LOSSY_KEYS = frozenset(k for k, f in BY_KEY.items() if f.lossy)
# Names a user may give for an output format: the key, or any of its suffixes.
OUTPUT_NAMES: dict[str, str] = {
    **{ext.lstrip("."): key for key, f in BY_KEY.items() for ext in f.extensions}, **{k: k for k in BY_KEY}
}
# Pillow formats a batch accepts as input (besides RAW and video).
INPUT_FORMATS = frozenset(BY_PILLOW)

# Formats whose files carry EXIF that Pillow reads (orientation lives there).
EXIF_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP", "PNG", "AVIF"})
# Formats libjpeg decodes, so draft mode (1/2, 1/4, 1/8 scale) applies.
DRAFT_FORMATS = frozenset({"JPEG", "MPO"})

RAW_SUFFIXES = frozenset({".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng",
                          ".orf", ".rw2", ".raf", ".pef", ".srw"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})


def extensions(pillow: str) -> tuple[str, ...]:
    """The suffixes of a Pillow format (``.<name>`` for one not in the table)."""
    fmt = BY_PILLOW.get(pillow)
    return fmt.extensions if fmt else (f".{pillow.lower()}",)


def suffix_matches(path: Path, pillow: str) -> bool:
    """Whether ``path``'s suffix is one of the format's (a PNG named .jpg: False)."""
    return path.suffix.lower() in extensions(pillow)


def suffix(key: str) -> str:
    """The suffix galleryflow writes for an output key (``jpeg`` → ``.jpg``)."""
    return BY_KEY[key].extensions[0]


def output_key(name: str) -> str:
    """The output key a user's format name means (``JPG``, ``.jpeg`` → ``jpeg``)."""
    key = OUTPUT_NAMES.get(str(name).lower().lstrip("."))
    if key is None:
        raise ValueError(f"unsupported output format {name!r} (use {', '.join(OUTPUT_KEYS)})")
    return key


def default_quality(key: str) -> int:
    """The quality an output key is encoded at when none is asked."""
    return BY_KEY[key].default_quality or 85


def bytes_per_pixel(key: str) -> float:
    """A generous guess of an output's bytes per pixel (free-disk estimates)."""
    return BY_KEY[key].bytes_per_pixel


def pillow_name(key: str) -> str:
    return BY_KEY[key].pillow


def mime(pillow_or_key: str) -> str:
    fmt = BY_PILLOW.get(pillow_or_key) or BY_KEY.get(pillow_or_key)
    return fmt.mime if fmt else "application/octet-stream"


def same_output(pillow: str) -> str | None:
    """The output key that writes ``pillow`` as itself (MPO → jpeg), or None."""
    fmt = BY_PILLOW.get(pillow)
    return fmt.same_as if fmt else None


def default_output(pillow: str) -> str:
    """What an input becomes when no output format is asked: itself where we can
    write it, PNG for other lossless formats, JPEG for the rest (RAW, video)."""
    fmt = BY_PILLOW.get(pillow)
    return (fmt.same_as or fmt.default_output) if fmt else "jpeg"


def kind_of(path: Path) -> str:
    """``raw``, ``video`` or ``image``, by suffix (content is checked when decoding)."""
    ext = path.suffix.lower()
    if ext in RAW_SUFFIXES:
        return "raw"
    if ext in VIDEO_SUFFIXES:
        return "video"
    return "image"
