"""The reference ``bench/batch_cli.py`` measures ``galleryflow batch process`` against:
a plain two-thread Pillow script with draft decoding, doing the same work as a
preset (``thumbnail``: 320×240 crop, JPEG q75; ``web_optimized``: 1280 wide, WebP
q85).

    python bench/pillow_batch.py PRESET OUTPUT_FOLDER FILE...

Run as a script it pays its own start-up (the interpreter, Pillow), as the command
line does; ``bench/batch_cli.py`` also calls :func:`reference` in its own process.
Only the standard library and Pillow are imported.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PRESETS = {
    "thumbnail": dict(width=320, height=240, crop=True, format="JPEG", suffix=".jpg", quality=75),
    "web_optimized": dict(width=1280, height=None, crop=False, format="WEBP", suffix=".webp",
                          quality=85),
}


def _one(path: Path, out: Path, p: dict) -> None:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        box = (p["width"], p["height"] or p["width"])
        img.draft("RGB", box if p["crop"] else (p["width"], p["width"]))
        img = ImageOps.exif_transpose(img).convert("RGB")
        if p["crop"]:
            img = ImageOps.fit(img, box, Image.Resampling.LANCZOS)
        else:
            img = img.resize((p["width"], round(img.height * p["width"] / img.width)),
                             Image.Resampling.LANCZOS)
        img.save(out / (path.stem + p["suffix"]), p["format"], quality=p["quality"])


def reference(files: list[Path], out: Path, preset: str) -> float:
    """Every file done on two threads; the seconds it took."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda f: _one(f, out, PRESETS[preset]), files))
    return time.perf_counter() - start


if __name__ == "__main__":
    reference([Path(f) for f in sys.argv[3:]], Path(sys.argv[2]), sys.argv[1])
