"""Colour: pixel modes to RGB, alpha flattening, and sRGB through the embedded ICC profile.

One implementation of each, used by every consumer (set pipeline, publishing,
batch jobs):

- :func:`to_rgb`: any mode Pillow decodes to 8-bit RGB; 16-bit greys are scaled
  (not clipped to white), float images stretched, alpha flattened;
- :func:`flatten`: alpha composited onto a background colour;
- :func:`to_srgb`: pixels converted from their embedded profile to sRGB with
  littleCMS. A profile that *is* sRGB (by what it does to 729 test colours,
  not by its name) is left alone: the pixels already are sRGB. Transforms are built once per (profile, mode) and
  cached; they are built with ``NOCACHE`` because lcms's one-pixel cache is not
  thread-safe and images are processed on threads (Pillow releases the GIL).
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageCms, ImageColor

WHITE = "#ffffff"
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)


def flatten(img: Image.Image, background: str = WHITE) -> Image.Image:
    """``img`` composited onto ``background`` (RGB out); an image without alpha as it is."""
    if not has_alpha(img):
        return img
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    base = Image.new("RGB", rgba.size, ImageColor.getrgb(background)[:3])
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


def to_rgb(img: Image.Image, background: str = WHITE) -> Image.Image:
    """RGB from any mode Pillow decodes: palette, alpha, CMYK, 16-bit grey, float."""
    if img.mode == "RGB":
        return img
    if img.mode in SIXTEEN_BIT_MODES:
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
    if has_alpha(img):
        return flatten(img, background)
    return img.convert("RGB")


# ---------------------------------------------------------------- ICC → sRGB

_SRGB = ImageCms.createProfile("sRGB")
_transform_lock = threading.Lock()  # lru_cache is not atomic: build each transform once


@lru_cache(maxsize=1)
def srgb_profile_bytes() -> bytes:
    """littleCMS's sRGB profile, to embed in outputs that are sRGB.

    littleCMS stamps the profile with the time it was built (header bytes 24–35);
    the stamp is zeroed so that the same image gives the same bytes in every
    process (a resumed publish recognises an upload by its sha256).
    """
    data = bytearray(ImageCms.ImageCmsProfile(_SRGB).tobytes())
    data[24:36] = bytes(12)
    return bytes(data)


def _profile(icc: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc))


def _probe_colours() -> Image.Image:
    """Every combination of 9 levels per channel (729 colours, black to white)."""
    levels = [0, 32, 64, 96, 128, 160, 192, 224, 255]
    data = bytes(v for r in levels for g in levels for b in levels for v in (r, g, b))
    return Image.frombytes("RGB", (len(levels) ** 3, 1), data)


@lru_cache(maxsize=64)
def _is_srgb(digest: str, icc: bytes) -> bool:
    try:
        if _profile(icc).profile.xcolor_space.strip() != "RGB":
            return False
        probe = _probe_colours()
        out = ImageCms.applyTransform(probe, _transform(digest, icc, "RGB", "RGB"))
    except (OSError, ValueError, ImageCms.PyCMSError):
        return False  # unusable: to_srgb tries it and says why
    assert out is not None
    return max(abs(a - b) for a, b in zip(probe.tobytes(), out.tobytes())) <= 1


def is_srgb(icc: bytes) -> bool:
    """Whether converting through the profile would leave the pixels as they are
    (within one level): an sRGB profile by what it does, not by what it is called.

    Tested once per profile on 729 colours; a camera's "sRGB IEC61966-2.1" passes,
    a wide-gamut or mislabelled profile does not.
    """
    with _transform_lock:
        return _is_srgb(hashlib.sha1(icc).hexdigest(), icc)


@lru_cache(maxsize=32)
def _transform(digest: str, icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform:
    # NOCACHE: lcms's one-pixel cache is not thread-safe, and one transform serves all threads.
    return ImageCms.buildTransform(_profile(icc), ImageCms.ImageCmsProfile(_SRGB), in_mode,
                                   out_mode, renderingIntent=ImageCms.Intent.PERCEPTUAL,
                                   flags=ImageCms.Flags.NOCACHE)


def srgb_transform(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform:
    """The cached transform from ``icc`` to sRGB (built once per profile and modes)."""
    with _transform_lock:  # building is cheap but lru_cache would build twice in a race
        return _transform(hashlib.sha1(icc).hexdigest(), icc, in_mode, out_mode)


@dataclass
class SrgbResult:
    image: Image.Image
    converted: bool  # the pixels went through the profile
    warning: str | None = None  # the profile could not be used (the pixels are as decoded)


def to_srgb(img: Image.Image, icc: bytes | None) -> SrgbResult:
    """Pixels in sRGB: converted through ``icc`` unless it is absent or already sRGB.

    A converted image is RGB, or RGBA when it had alpha (from CMYK: RGB). An image
    that needs no conversion, or whose profile is unusable, comes back unchanged,
    the latter with a warning; callers then treat it as sRGB.
    """
    if not icc or is_srgb(icc):
        return SrgbResult(img, False)
    try:
        if img.mode == "CMYK":
            in_mode, out_mode, base = "CMYK", "RGB", img
        elif has_alpha(img):
            in_mode = out_mode = "RGBA"
            base = img if img.mode == "RGBA" else img.convert("RGBA")
        elif img.mode in ("RGB", "L"):
            in_mode, out_mode, base = img.mode, "RGB", img
        else:
            in_mode = out_mode = "RGB"
            base = to_rgb(img)
        out = ImageCms.applyTransform(base, srgb_transform(icc, in_mode, out_mode))
        assert out is not None
        return SrgbResult(out, True)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        return SrgbResult(img, False, f"embedded ICC profile unusable ({exc}); treated as sRGB")
