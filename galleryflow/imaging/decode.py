"""Shared image primitives: sniff, decode once (draft mode), orient, reduce.

Performance notes (DESIGN.md, measured on 24-MP JPEGs, one core): a full decode
is ~0.22 s; JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, which
makes a 1280-px result ~3× faster and a 320-px one ~4×, with no visible loss.
So every consumer that wants a smaller image asks :func:`open_reduced` for it
and derives everything else (model input, thumbnail, pHash, scoring input) from
that one reduced copy.

``Image.verify()`` passes truncated JPEGs, so validation decodes (draft is
enough). ``LOAD_TRUNCATED_IMAGES`` stays off: a truncated file is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

# Pillow's own bomb guard is a backstop; validate applies the configured limit first.
Image.MAX_IMAGE_PIXELS = 200_000_000

FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe"),
    "MPO": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
    "AVIF": (".avif",),
}


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    mode: str


def read_header(path: Path) -> ImageHeader:
    """Format and size from the header only (no pixel decode)."""
    with Image.open(path) as img:
        return ImageHeader(format=img.format or "?", width=img.width, height=img.height, mode=img.mode)


def suffix_matches(path: Path, fmt: str) -> bool:
    return path.suffix.lower() in FORMAT_SUFFIXES.get(fmt, (f".{fmt.lower()}",))


def draft_request(size: tuple[int, int], long_edge: int) -> tuple[int, int]:
    """The draft size that keeps the long edge >= ``long_edge`` with the image's aspect.

    ``draft`` picks the largest DCT scale whose result covers the request in *both*
    sides, so asking for (L, L) would decode a 3:2 photo at twice the scale needed
    (a 24-MP JPEG bound to 1024 px: 1/2 scale instead of 1/4, ~2× the time). EXIF
    orientation needs no care here: a rotation keeps the long edge the long edge.
    """
    w, h = size
    m = max(w, h)
    return max(1, math.ceil(long_edge * w / m)), max(1, math.ceil(long_edge * h / m))


def _draft(img: Image.Image, long_edge: int | None) -> None:
    if long_edge and img.format in ("JPEG", "MPO"):
        img.draft("RGB", draft_request(img.size, long_edge))


def decode_check(path: Path) -> None:
    """Decode the whole file; raise if it is damaged.

    A JPEG is decoded at the smallest DCT scale (1/8): libjpeg still reads every
    byte of the entropy-coded data, so a truncated or corrupt stream fails exactly
    as in a full decode, at about half the cost.
    """
    with Image.open(path) as img:
        if img.format in ("JPEG", "MPO"):
            img.draft("RGB", (1, 1))
        img.load()


def open_reduced(path: Path, long_edge: int | None) -> Image.Image:
    """Decode once, EXIF orientation applied, RGB, long edge at most ``long_edge``."""
    with Image.open(path) as img:
        _draft(img, long_edge)
        img.load()
        oriented = ImageOps.exif_transpose(img)
    rgb = to_rgb(oriented)
    if long_edge and max(rgb.size) > long_edge:
        rgb.thumbnail((long_edge, long_edge), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode Pillow decodes: palette, alpha, CMYK, 16-bit grey, float."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit: scale to 8 bits rather than clipping everything above 255 to white.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr / top * 255.0).clip(0, 255).astype("uint8")).convert("RGB")
    if img.mode == "F":
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        span = (arr.max() - arr.min()) or 1.0
        return Image.fromarray(((arr - arr.min()) / span * 255).astype("uint8")).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def oriented_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """Display size after the EXIF orientation is applied (5–8 swap the sides)."""
    if orientation in (5, 6, 7, 8):
        return height, width
    return width, height
