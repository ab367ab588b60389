"""``index.html`` for the local site folder, so the embedded default is browsable."""

from __future__ import annotations

from html import escape as html
from pathlib import Path

from galleryflow.core.fsutil import atomic_write_text
from galleryflow.core.settings import Settings, get_settings
from galleryflow.publishing.config import resolve_gallery


def write_site_index(settings: Settings | None = None) -> Path:
    """``index.html`` in the local site folder: every gallery row, newest first.

    Makes the embedded default's site folder browsable (``make demo``); a real
    site renders the gallery table itself.
    """
    settings = settings or get_settings()
    with resolve_gallery(settings).connect() as gallery:
        gallery.ensure_table()
        rows = sorted(gallery.rows(), key=lambda r: (r["Taken_At"] is None, r["Taken_At"] or 0))
    figures = []
    for r in rows:
        figures.append(
            f'<figure><a href="{html(r["Image_Path"] or "")}">'
            f'<img src="{html(r["Thumbnail_Path"] or "")}" alt="{html(r["Alt_Text"] or "")}"'
            f' width="{r["Thumb_Width"] or ""}" height="{r["Thumb_Height"] or ""}" loading="lazy">'
            f"</a><figcaption><strong>{html(r['Title'] or '')}</strong><br>"
            f"{html(r['Caption'] or '')}<br><small>{html(r['Keywords'] or '')}</small>"
            f"</figcaption></figure>"
        )
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>galleryflow gallery</title><style>body{font-family:sans-serif;margin:2em}"
        "main{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1.5em}"
        "figure{margin:0}img{max-width:100%;height:auto}</style></head><body>"
        f"<h1>Gallery</h1><p>{len(rows)} photos</p><main>\n"
        + "\n".join(figures)
        + "\n</main></body></html>\n"
    )
    index = settings.site_dir / "index.html"
    atomic_write_text(index, page)
    return index
