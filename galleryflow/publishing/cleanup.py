"""Work files a finished publish no longer needs."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import RowStatus
from galleryflow.db import Photo, session_scope
from galleryflow.publishing.derivatives import work_folder


def cleanup_work_files(row_ids: Sequence[int], settings: Settings | None = None) -> int:
    """Remove publish derivatives of these rows, and other work files of the published ones.

    Only files under ``settings.work_dir`` are touched (incoming copies and
    originals never). Returns how many files were removed.
    """
    settings = settings or get_settings()
    work = settings.work_dir.resolve()
    removed = 0
    for row_id in row_ids:
        folder = work_folder(settings.work_dir, row_id)
        if folder.is_dir():
            removed += sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    with session_scope(settings.db_url) as session:
        rows = session.scalars(
            select(Photo).where(
                Photo.id.in_(list(row_ids)), Photo.status == RowStatus.PUBLISHED
            )
        )
        for row in rows:
            for attr in ("ollama_path", "thumbnail_path"):
                value = getattr(row, attr)
                if not value:
                    continue
                path = Path(value).resolve()
                if path.is_relative_to(work) and path.is_file():
                    path.unlink()
                    removed += 1
                    setattr(row, attr, None)
    return removed


def published_leftovers(settings: Settings | None = None) -> list[int]:
    """Rows with publish work files left in ``work/publish/`` although they are published
    (or gone): what a publish killed after marking its rows, before its cleanup, leaves."""
    settings = settings or get_settings()
    root = settings.work_dir / "publish"
    if not root.is_dir():
        return []
    ids = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    if not ids:
        return []
    with session_scope(settings.db_url) as session:
        live = dict(session.execute(select(Photo.id, Photo.status).where(Photo.id.in_(ids))).all())
    return sorted(i for i in ids if live.get(i, RowStatus.PUBLISHED) == RowStatus.PUBLISHED)
