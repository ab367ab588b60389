"""One encoder for JPEG, WebP, AVIF and PNG: bytes (:func:`encode`) or an atomic
file (:func:`write`).

Only the metadata passed in reaches the file: Pillow's encoders otherwise fall
back to the image's own ``info`` (the source's ICC profile, EXIF, XMP or JPEG
comment), which is how location and private notes leak into web images.

Speed (DESIGN.md, 24-MP images, one core): once decoding is in draft mode the
encoders dominate. JPEG ~5 ms; WebP ~130–175 ms at method 4 (Pillow's default),
~40 ms at method 0; AVIF ~1–1.6 s at Pillow's default speed 6 but ~0.1–0.2 s at
speed 10 and still smaller than WebP, so the default here is speed 8 (~5× faster
than 6). Callers with a reason pass their own ``webp_method`` / ``avif_speed``.

Chroma: JPEG and AVIF keep full colour resolution (4:4:4) at quality ≥ 90, where
4:2:0 would blur red edges and fine colour detail; below 90, 4:2:0.

An optimised or progressive JPEG is encoded in one buffer that Pillow sizes at
one byte per pixel below quality 95; a noisy picture at 4:4:4 can need more, and
libjpeg then fails ("Suspension not allowed here" / "broken data stream"). Such
an encode is retried once with a buffer large enough for any JPEG of that size.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageFile

from galleryflow.core.fsutil import atomic_path
from galleryflow.imaging.colour import WHITE, flatten, to_rgb
from galleryflow.imaging.formats import pillow_name

WEBP_METHOD = 4
AVIF_SPEED = 8
PNG_COMPRESS_LEVEL = 6
FULL_CHROMA_QUALITY = 90  # at or above: 4:4:4
_PNG_MODES = frozenset({"RGB", "RGBA", "L", "LA", "I;16", "P"})


def encoder_options(img: Image.Image, key: str, *, quality: int | None = None,
                    lossless: bool = False, optimize: bool = True, progressive: bool = False,
                    webp_method: int = WEBP_METHOD, avif_speed: int = AVIF_SPEED,
                    png_compress_level: int = PNG_COMPRESS_LEVEL, background: str = WHITE,
                    icc_profile: bytes | None = None, exif: bytes | None = None,
                    xmp: bytes | None = None, extra: bytes | None = None
                    ) -> tuple[Image.Image, dict[str, Any]]:
    """The image as the format can hold it, and Pillow's save arguments for it."""
    kwargs: dict[str, Any] = {name: value for name, value in
                              (("icc_profile", icc_profile), ("exif", exif), ("xmp", xmp),
                               ("extra", extra)) if value}
    if key == "jpeg":
        img = flatten(img, background)
        if img.mode not in ("RGB", "L"):
            img = to_rgb(img)
        kwargs.update(optimize=optimize, progressive=progressive)
        if quality is not None:
            kwargs.update(quality=quality,
                          subsampling=0 if quality >= FULL_CHROMA_QUALITY else 2)
    elif key == "webp":
        kwargs.update(lossless=lossless, method=webp_method)
        if quality is not None:
            kwargs.update(quality=quality)
    elif key == "avif":
        # Pillow's AVIF has no lossless switch: q100 with full chroma is the closest.
        q = 100 if lossless else quality
        kwargs.update(speed=avif_speed)
        if q is not None:
            kwargs.update(quality=q, subsampling="4:4:4" if lossless or q >= FULL_CHROMA_QUALITY
                          else "4:2:0")
    elif key == "png":
        kwargs.update(compress_level=png_compress_level)
        if img.mode not in _PNG_MODES:
            img = to_rgb(img)
    else:
        raise ValueError(f"cannot write {key!r} (jpeg, png, webp or avif)")
    return img, kwargs


_buffer_lock = threading.Lock()


def _save(img: Image.Image, target: Path | IO[bytes], key: str, kwargs: dict[str, Any]) -> None:
    own_info = img.info
    img.info = {}  # nothing of the source's metadata unless passed in
    try:
        try:
            img.save(target, pillow_name(key), **kwargs)
        except OSError:
            one_buffer = key == "jpeg" and (kwargs.get("optimize") or kwargs.get("progressive"))
            if not one_buffer:
                raise
            _save_with_large_buffer(img, target, kwargs)
    finally:
        img.info = own_info


def _save_with_large_buffer(img: Image.Image, target: Path | IO[bytes],
                            kwargs: dict[str, Any]) -> None:
    """Retry a one-buffer JPEG with room for ~4 bytes per pixel plus the metadata.

    ``ImageFile.MAXBLOCK`` is the floor of Pillow's buffer: raised only here, under a
    lock, and put back; a save on another thread meanwhile just gets a larger buffer.
    """
    if hasattr(target, "seek"):
        target.seek(0)
        target.truncate()  # type: ignore[union-attr]
    metadata = sum(len(v) for k, v in kwargs.items()
                   if k in ("exif", "icc_profile", "xmp", "extra") and v)
    needed = 4 * img.width * img.height + metadata + 65536
    with _buffer_lock:
        floor = ImageFile.MAXBLOCK
        ImageFile.MAXBLOCK = max(floor, needed)
        try:
            img.save(target, "JPEG", **kwargs)
        finally:
            ImageFile.MAXBLOCK = floor


def encode(img: Image.Image, key: str, **options: Any) -> bytes:
    """``img`` encoded as ``key`` (jpeg, png, webp, avif); options as :func:`encoder_options`."""
    img, kwargs = encoder_options(img, key, **options)
    buffer = io.BytesIO()
    _save(img, buffer, key, kwargs)
    return buffer.getvalue()


def write(img: Image.Image, dest: Path, key: str, **options: Any) -> None:
    """Encode ``img`` straight into ``dest``, atomically (a temporary name, then a rename)."""
    img, kwargs = encoder_options(img, key, **options)
    with atomic_path(dest) as tmp:
        _save(img, tmp, key, kwargs)
