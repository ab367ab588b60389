"""JPEG decoding at any of libjpeg-turbo's eighth scales, where Pillow's draft mode has
only halves.

libjpeg scales a JPEG while decoding it, in the inverse DCT, by M/8 for M = 1…8;
Pillow's draft mode asks it for 1/2, 1/4 or 1/8 only. A 24-MP photo (6000 px) bound
to a 2048-px web image is then decoded at 1/2 (3000 px) and resized by ×1.46 with
Lanczos: 70 + 100 ms. At 3/8 (2250 px) the decode costs about the same and the
resize ×1.1 costs 64 ms: ~30 ms (18 %) less a photo, with the same result (PSNR of
either against a full decode resized with Lanczos: 49.3 and 49.5 dB). The common
sizes this helps: 2048 px from 6000 (24 MP), 7008 (33 MP) or 5472 px (20 MP); a
3600-px image from a 24-MP photo (5/8) takes 300 ms instead of 480.

simplejpeg (libjpeg-turbo's TurboJPEG API, bundled in its wheel; it releases the GIL
like Pillow) decodes at those scales. It is used only where its scale is smaller than
the one Pillow's draft would choose, for a single-image JPEG in YCbCr or greyscale
(what cameras write), and strictly: any warning from libjpeg raises, and the caller
then decodes with Pillow exactly as before, so a damaged file fails with Pillow's
error, never with pixels a lenient decoder made up.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

try:  # a dependency of galleryflow; without it every JPEG takes Pillow's draft scales
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    simplejpeg = None

# Colour spaces TurboJPEG reports that map to Pillow's mode for the same file.
_MODES = {"YCbCr": "RGB", "Gray": "L"}


def pillow_scale(size: tuple[int, int], box: tuple[int, int]) -> int:
    """The denominator Pillow's JPEG draft picks for ``box`` (JpegImagePlugin.draft:
    the largest of 8, 4, 2, 1 that still covers the box on both sides)."""
    factor = min(size[0] // box[0], size[1] // box[1])
    return next((s for s in (8, 4, 2, 1) if factor >= s), 1)  # a box larger than the image: 1


def eighths(size: tuple[int, int], box: tuple[int, int]) -> int:
    """The least M (1…8) whose M/8 scale covers ``box`` on both sides (libjpeg rounds
    a scaled side up: ceil(side × M / 8))."""
    return next((m for m in range(1, 9)
                 if math.ceil(size[0] * m / 8) >= box[0] and math.ceil(size[1] * m / 8) >= box[1]),
                8)


# 7/8 is left to Pillow (a whole decode): it saves a quarter of the pixels, but libjpeg's
# 7×7 inverse DCT has no SIMD version, and decode plus resize measured the same or 6 %
# slower (24-MP and 640-px JPEGs); 3/8, 5/8 and 6/8 measured 15-40 % faster.
LARGEST_EIGHTHS = 6


def worthwhile(img: Image.Image, box: tuple[int, int]) -> bool:
    """Whether an eighth scale decodes ``img`` (an opened, single-image JPEG) smaller
    than Pillow's draft would, in a colour space this path takes."""
    if simplejpeg is None or img.mode not in _MODES.values():
        return False
    m = eighths(img.size, box)
    return m <= LARGEST_EIGHTHS and m * pillow_scale(img.size, box) < 8


def decode_scaled(data: bytes | memoryview, box: tuple[int, int], mode: str) -> Image.Image | None:
    """``data`` (a whole JPEG) decoded at the smallest eighth scale covering ``box``, as
    a Pillow image of ``mode`` (what Pillow would give: RGB or L); None when this path
    does not take the file (another colour space, any libjpeg warning or error)."""
    try:
        _, _, space, _ = simplejpeg.decode_jpeg_header(data)
        if _MODES.get(space) != mode:
            return None
        pixels = simplejpeg.decode_jpeg(data, "RGB" if mode == "RGB" else "GRAY",
                                        min_width=box[0], min_height=box[1], strict=True)
    except ValueError:
        return None
    if pixels.shape[1] < box[0] or pixels.shape[0] < box[1]:  # not what was asked: Pillow's
        return None
    # (height, width, 3) is RGB to Pillow, (height, width) is L.
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]) if mode == "L" else pixels)
