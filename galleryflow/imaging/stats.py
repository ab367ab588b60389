"""Image statistics, the perceptual hash and the deterministic fallback scores.

Pure numpy + Pillow (no torch), so every install can score: these run on the one
reduced, oriented RGB copy that stage 5 decodes per image.

Statistics (on the luma ``L`` of the reduced copy, ITU-R 601 as Pillow's ``"L"``):

- ``brightness`` = mean(L) / 255, in 0–1;
- ``contrast``   = std(L) / 255 (RMS contrast), in 0–0.5;
- ``blur``       = variance of the 4-neighbour Laplacian of L (0–255 scale), the
  classic focus measure: *higher is sharper*; below ~100 at 512 px looks soft;
- ``colourfulness`` = Hasler & Süsstrunk's M on RGB, roughly 0–150.

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
    """What the statistics say about one reduced image."""

    width: int
    height: int
    brightness: float
    contrast: float
    blur: float
    colourfulness: float


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


def image_stats(img: Image.Image) -> ImageStats:
    """Brightness, contrast, blur and colourfulness of an RGB image."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    luma = _luma(rgb)
    return ImageStats(
        width=rgb.width,
        height=rgb.height,
        brightness=round(float(luma.mean()) / 255.0, DECIMALS),
        contrast=round(float(luma.std()) / 255.0, DECIMALS),
        blur=round(laplacian_variance(luma), DECIMALS),
        colourfulness=round(colourfulness(np.asarray(rgb)), DECIMALS),
    )


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
