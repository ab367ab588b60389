"""Image statistics, the perceptual hash and the deterministic fallback scores.

Pure numpy + Pillow (no torch), so every install can score: these run on one
reduced, oriented RGB copy (stage 5's scoring input; the offline captioner's
128-px copy of the model-ready image). There is ONE :class:`ImageStats`.

Units: every tonal measure is a fraction of full scale, 0–1 (a mean of 128 on
8-bit pixels is 0.502). The two measures taken from the literature keep their
published definitions on 8-bit values, as their descriptions say.

Statistics (on the luma ``L`` of the reduced copy, ITU-R 601 as Pillow's ``"L"``):

- ``brightness`` = mean(L) / 255, in 0–1;
- ``contrast``   = std(L) / 255 (RMS contrast), in 0–0.5;
- ``blur``       = variance of the 4-neighbour Laplacian of L (0–255 scale), the
  classic focus measure: *higher is sharper*; below ~100 at 512 px looks soft;
- ``colourfulness`` = Hasler & Süsstrunk's M on RGB (0–255 scale), roughly 0–150.

Appearance (``image_stats(img, appearance=True)``; what the offline captioner
describes), in the same 0–1 units:

- ``warmth`` = (mean(R) − mean(B)) / 255, in −1–1 (warm light > 0);
- ``dominant`` = the colour name of the most common saturated hue, or ``"grey"``
  when under 8 % of the pixels are saturated;
- ``upper_minus_lower`` = (mean L of the upper half − of the lower half) / 255;
- ``detail`` = mean absolute luma step between neighbours (across + down) / 255;
- ``orientation`` (from the size): ``landscape``, ``portrait`` or ``square``
  (aspect within 0.9–1.1).

Fallback formula (used when weights are absent or a model cannot score an image),
with ``clip01(v) = min(max(v, 0), 1)``::

    sharpness = clip01(log10(1 + blur) / 3)          # 1000 → 1.0, 100 → 0.67
    exposure  = 1 - clip01(|brightness - 0.5| * 2)   # mid-grey 1, black/white 0
    tonal     = clip01(contrast / 0.25)
    colour    = clip01(colourfulness / 100)

    brisque_fallback   = 100 * (1 - (0.5 sharpness + 0.25 exposure + 0.25 tonal))
                         # 0–100, lower is better, like BRISQUE
    aesthetic_fallback = 1 + 9 * (0.35 sharpness + 0.25 exposure + 0.2 tonal + 0.2 colour)
                         # 1–10, higher is better, like the LAION predictor

Every value is rounded to :data:`DECIMALS` places, so the same bytes give the same
scores on every run and machine (float noise in the last bits never shows).

The pHash follows ``imagehash.phash``: greyscale, Lanczos to 32×32, 2-D DCT-II,
the top-left 8×8 block compared with its median → 64 bits as 16 hex digits. The
hash is computed after EXIF orientation, so a rotated copy hashes like the original.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image
from pydantic import BaseModel

DECIMALS = 4
STATS_VERSION = "stats-v2"  # v2: aspect-true draft decode (a smaller DCT scale)
FALLBACK_VERSION = "fallback-v1"


class ImageStats(BaseModel):
    """What the statistics say about one reduced image (units: the module docstring)."""

    width: int
    height: int
    brightness: float  # mean luma, 0–1
    contrast: float  # luma standard deviation, 0–0.5
    blur: float  # Laplacian variance, 0–255 scale: higher is sharper
    colourfulness: float  # Hasler & Süsstrunk M, 0–255 scale, ~0–150
    # Appearance: only with ``image_stats(img, appearance=True)``.
    warmth: float | None = None  # (mean R − mean B), −1–1
    dominant: str | None = None  # colour name of the most common saturated hue, or "grey"
    upper_minus_lower: float | None = None  # mean luma, upper half − lower half, −1–1
    detail: float | None = None  # mean absolute luma gradient, 0–1

    @property
    def orientation(self) -> str:
        """``landscape``, ``portrait`` or ``square`` (aspect within 0.9–1.1)."""
        ratio = self.width / self.height if self.height else 1.0
        return "square" if 0.9 < ratio < 1.1 else ("landscape" if ratio > 1 else "portrait")


def _clip01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _luma(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float64)


def laplacian_variance(luma: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (the kernel of ``cv2.Laplacian``, ksize=1)."""
    if luma.shape[0] < 3 or luma.shape[1] < 3:
        return 0.0
    centre = luma[1:-1, 1:-1]
    lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
    return float(lap.var())


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003): spread and mean of the opponent colour channels."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    spread = math.sqrt(rg.var() + yb.var())
    mean = math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * mean)


_HUES = [
    (15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (195, "teal"),
    (255, "blue"), (290, "purple"), (335, "magenta"), (360, "red"),
]


def hue_name(degrees: float) -> str:
    return next(name for limit, name in _HUES if degrees < limit)


def dominant_colour(rgb: Image.Image) -> str:
    """The name of the most common saturated hue (10° bins), or ``grey`` when under
    8 % of the pixels are saturated (S > 60/255 and V > 50/255)."""
    hsv = np.asarray(rgb.convert("HSV"), dtype=np.float32)
    saturated = (hsv[..., 1] > 60) & (hsv[..., 2] > 50)
    if saturated.mean() <= 0.08:
        return "grey"
    hist, _ = np.histogram(hsv[..., 0][saturated] * 360 / 255, bins=36, range=(0, 360))
    return hue_name(float(np.argmax(hist) * 10 + 5))


def image_stats(img: Image.Image, appearance: bool = False) -> ImageStats:
    """Brightness, contrast, blur and colourfulness of an RGB image; with
    ``appearance`` also warmth, dominant colour, light distribution and detail."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    luma = _luma(rgb)
    pixels = np.asarray(rgb)
    stats = ImageStats(
        width=rgb.width,
        height=rgb.height,
        brightness=round(float(luma.mean()) / 255.0, DECIMALS),
        contrast=round(float(luma.std()) / 255.0, DECIMALS),
        blur=round(laplacian_variance(luma), DECIMALS),
        colourfulness=round(colourfulness(pixels), DECIMALS),
    )
    if appearance:
        half = luma.shape[0] // 2
        red, blue = pixels[..., 0].astype(np.float64), pixels[..., 2].astype(np.float64)
        steps = np.abs(np.diff(luma, axis=1)).mean() if luma.shape[1] > 1 else 0.0
        steps += np.abs(np.diff(luma, axis=0)).mean() if luma.shape[0] > 1 else 0.0
        upper_lower = float(luma[:half].mean() - luma[half:].mean()) if half else 0.0
        stats.warmth = round(float(red.mean() - blue.mean()) / 255.0, DECIMALS)
        stats.dominant = dominant_colour(rgb)
        stats.upper_minus_lower = round(upper_lower / 255.0, DECIMALS)
        stats.detail = round(float(steps) / 255.0, DECIMALS)
    return stats


def _components(stats: ImageStats) -> tuple[float, float, float, float]:
    sharpness = _clip01(math.log10(1.0 + stats.blur) / 3.0)
    exposure = 1.0 - _clip01(abs(stats.brightness - 0.5) * 2.0)
    tonal = _clip01(stats.contrast / 0.25)
    colour = _clip01(stats.colourfulness / 100.0)
    return sharpness, exposure, tonal, colour


def fallback_brisque(stats: ImageStats) -> float:
    """BRISQUE-like, 0–100, lower is better (see the module docstring)."""
    sharpness, exposure, tonal, _ = _components(stats)
    quality = 0.5 * sharpness + 0.25 * exposure + 0.25 * tonal
    return round(100.0 * (1.0 - quality), DECIMALS)


def fallback_aesthetic(stats: ImageStats) -> float:
    """LAION-predictor-like, 1–10, higher is better (see the module docstring)."""
    sharpness, exposure, tonal, colour = _components(stats)
    appeal = 0.35 * sharpness + 0.25 * exposure + 0.2 * tonal + 0.2 * colour
    return round(1.0 + 9.0 * appeal, DECIMALS)


# An image that could not be decoded has no statistics: it gets the worst value
# of each fallback range, so it sorts last for the reviewer rather than vanishing.
WORST_BRISQUE = 100.0
WORST_AESTHETIC = 1.0


@lru_cache(maxsize=4)
def _dct_matrix(size: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix (scipy.fftpack.dct's, up to a factor 2)."""
    n = np.arange(size)
    return np.cos(np.pi * np.outer(n, 2 * n + 1) / (2 * size))


def phash(img: Image.Image, hash_size: int = 8, highfreq_factor: int = 4) -> str:
    """64-bit perceptual hash as 16 hex digits (imagehash.phash's algorithm)."""
    size = hash_size * highfreq_factor
    pixels = np.asarray(
        img.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64
    )
    dct = _dct_matrix(size)
    coefficients = dct @ pixels @ dct.T
    low = coefficients[:hash_size, :hash_size]
    bits = (low > np.median(low)).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:0{hash_size * hash_size // 4}x}"


def phash_distance(a: str, b: str) -> int:
    """Hamming distance between two pHashes (0: same picture; ≤ 8: near duplicates)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
