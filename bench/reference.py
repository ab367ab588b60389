"""The one-decode limit: the least work stages 1–6 can do on a photo, as a plain script.

    .venv/bin/python bench/reference.py FOLDER [--threads 2]

Per photo, on ``--threads`` threads: read the file once, hash those bytes once,
draft-decode them once (libjpeg's DCT scaling, aspect-true, to the 1024-px model
edge), orient nothing (the bench's photos are upright), then derive from those
pixels the 512-px scoring input and the 1024-px q85 JPEG the vision model gets.
No validation report, no database, no Prefect, no statistics or scores: this is
the floor galleryflow's stages 1–6 are measured against (``bench/intake.py``
prints their time as a share of it, measured in the same process).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

MODEL_EDGE = 1024
SCORING_EDGE = 512


def _one(path: Path) -> int:
    data = path.read_bytes()
    hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        scale = MODEL_EDGE / max(width, height)
        image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        pixels = image.convert("RGB")
    model = pixels.copy()
    model.thumbnail((MODEL_EDGE, MODEL_EDGE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    model.save(out, "JPEG", quality=85)
    scoring = model.copy()
    scoring.thumbnail((SCORING_EDGE, SCORING_EDGE), Image.Resampling.LANCZOS)
    return len(out.getvalue()) + scoring.width


def one_decode_limit(files: list[Path], threads: int = 2) -> float:
    """Seconds the minimum work takes on ``files`` (a warm-up file first, not timed)."""
    _one(files[0])
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_one, files))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})
    seconds = one_decode_limit(files, args.threads)
    print(f"{len(files)} photos, {args.threads} threads: {seconds:.2f} s, "
          f"{len(files) / seconds:.1f} img/s (the one-decode limit)")


if __name__ == "__main__":
    main()
