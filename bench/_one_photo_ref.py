"""The reference of ``bench/one_photo.py``: the minimum a one-photo run does, as a plain script.

    python bench/_one_photo_ref.py PHOTO OUT_FOLDER

Read the file once, hash those bytes, draft-decode them (libjpeg's DCT scaling to
the 1024-px edge), write the 1024-px q85 JPEG and copy the photo into OUT_FOLDER.
No database, no Prefect, no checks: the floor a one-photo ``galleryflow run`` is
compared with (start-up of this interpreter included, as the run's is).
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

from PIL import Image

EDGE = 1024


def main() -> None:
    photo, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    data = photo.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (EDGE, EDGE))
        pixels = image.convert("RGB")
    pixels.thumbnail((EDGE, EDGE), Image.Resampling.LANCZOS)
    pixels.save(out / f"{digest[:16]}-1024.jpg", "JPEG", quality=85)
    (out / photo.name).write_bytes(data)


if __name__ == "__main__":
    main()
