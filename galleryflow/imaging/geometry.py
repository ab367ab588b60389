"""Sizes and resizing: orientation-aware sizes, draft requests, bounding a long
edge, and fitting a box (fit, crop, fill, pad).

Two ways to make an image smaller, each for its reason:

- :func:`reduce` bounds the long edge of the image in hand, as
  ``Image.thumbnail`` does (Lanczos, ``reducing_gap=3`` unless the caller gives
  another). The set pipeline's reduced copies (scoring input, model input, web
  image and its thumbnail, the last with Pillow's default gap of 2) are made this
  way, and their statistics and files depend on it staying so.
- :func:`plan_resize` + :func:`resize` fit a requested box. The output size is
  planned from the *original* size (display orientation), so a draft decode,
  which may round a side up, never changes the result by a pixel. Batch jobs
  resize this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageColor, ImageOps

RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0

# EXIF orientations 5–8 turn the picture a quarter: width and height swap.
QUARTER_TURNS = frozenset({5, 6, 7, 8})


def oriented_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """Display size after the EXIF orientation is applied (5–8 swap the sides)."""
    if orientation in QUARTER_TURNS:
        return height, width
    return width, height


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


def reduce(img: Image.Image, long_edge: int | None, copy: bool = True, *,
           resample: Image.Resampling = RESAMPLE, reducing_gap: float = REDUCING_GAP
           ) -> Image.Image:
    """``img`` with its long edge at most ``long_edge``: a new image, or with
    ``copy=False`` ``img`` itself reduced in place (for an image the caller owns).

    An image already small enough is returned as it is.
    """
    if not long_edge or max(img.size) <= long_edge:
        return img
    out = img.copy() if copy else img
    out.thumbnail((long_edge, long_edge), resample, reducing_gap=reducing_gap)
    return out


# ---------------------------------------------------------------- fitting a box

@dataclass(frozen=True)
class Plan:
    """The output size decided from the *original* size, so a draft decode (which
    may round) never changes the result by a pixel."""

    size: tuple[int, int]
    decode: tuple[int, int]  # the least the decoder must deliver
    mode: str  # none | fit | crop | fill | pad
    inner: tuple[int, int] | None = None  # pad: the fitted picture inside the canvas


def fit_size(sw: int, sh: int, w: int | None, h: int | None, upscale: bool) -> tuple[int, int]:
    """``sw``×``sh`` scaled to fit inside ``w``×``h`` (either may be None), aspect kept."""
    if w and h:
        scale = min(w / sw, h / sh)
    elif w:
        scale = w / sw
    else:
        scale = (h or sh) / sh
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(sw * scale)), max(1, round(sh * scale))


def plan_resize(sw: int, sh: int, width: int | None, height: int | None, fit: str = "fit",
                upscale: bool = False) -> Plan:
    """Output size for a ``sw``×``sh`` image (display orientation) and a box.

    ``fit``: ``fit`` (inside the box), ``crop`` (fill the box, centre crop), ``fill``
    (stretch to the box), ``pad`` (fit, then pad to the box).
    """
    if width is None and height is None:
        return Plan((sw, sh), (sw, sh), "none")
    if fit == "fit" or not (width and height):
        size = fit_size(sw, sh, width, height, upscale)
        return Plan(size, size, "fit")
    w, h = width, height
    if fit == "crop":
        scale = max(w / sw, h / sh)
        if scale > 1 and not upscale:
            # Too small to fill the box: crop the box's shape at 1:1 instead of enlarging.
            return Plan((max(1, round(w / scale)), max(1, round(h / scale))), (sw, sh), "crop")
        return Plan((w, h), (max(1, round(sw * scale)), max(1, round(sh * scale))), "crop")
    if fit == "fill":
        size = (w, h) if upscale else (min(w, sw), min(h, sh))
        return Plan(size, size, "fill")
    inner = fit_size(sw, sh, w, h, upscale)
    return Plan((w, h), inner, "pad", inner)


def resize(img: Image.Image, plan: Plan, background: str = "#ffffff") -> Image.Image:
    """``img`` made to the plan's size (Lanczos); ``pad`` fills with ``background``
    (transparent for an image with alpha)."""
    if plan.mode == "none" or (plan.mode in ("fit", "fill") and img.size == plan.size):
        return img
    if plan.mode in ("fit", "fill"):
        return img.resize(plan.size, RESAMPLE, reducing_gap=REDUCING_GAP)
    if plan.mode == "crop":
        return ImageOps.fit(img, plan.size, RESAMPLE, centering=(0.5, 0.5))
    assert plan.inner is not None
    inner = img if img.size == plan.inner else img.resize(plan.inner, RESAMPLE,
                                                          reducing_gap=REDUCING_GAP)
    colour = ImageColor.getrgb(background)
    canvas = Image.new(inner.mode if inner.mode in ("RGB", "RGBA") else "RGB", plan.size,
                       colour if inner.mode != "RGBA" else (*colour[:3], 0))
    canvas.paste(inner, ((plan.size[0] - inner.width) // 2, (plan.size[1] - inner.height) // 2))
    return canvas
