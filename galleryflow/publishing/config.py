"""Where a publish goes: the target and gallery database from settings, and the
derivative sizes the target asks for."""

from __future__ import annotations

from typing import Any

from blocks.gallery_db import GalleryDatabase
from blocks.targets import LocalFolderTarget, PublishTarget, SftpTarget
from galleryflow.core.settings import Settings, get_settings
from galleryflow.publishing.derivatives import DerivativeSpec


class PublishConfigError(RuntimeError):
    """Publishing is misconfigured (no target block named, unknown block…)."""


def resolve_target(settings: Settings | None = None) -> PublishTarget:
    """The target from settings: a named block, or the local site folder by default."""
    settings = settings or get_settings()
    p = settings.publish
    if p.target_block:
        cls = SftpTarget if p.target == "sftp" else LocalFolderTarget
        try:
            return cls.load(p.target_block)
        except ValueError as exc:
            raise PublishConfigError(
                f"publish.target_block {p.target_block!r}: no {cls.__name__} block of that name "
                f"({exc})"
            ) from None
    if p.target == "sftp":
        raise PublishConfigError(
            "publish.target is 'sftp' but publish.target_block names no SftpTarget block; "
            "create one (SftpTarget(...).save('site')) and set "
            "GALLERYFLOW_PUBLISH__TARGET_BLOCK=site"
        )
    return LocalFolderTarget(root=str(settings.site_dir), public_base_url=p.public_base_url)


def resolve_gallery(settings: Settings | None = None) -> GalleryDatabase:
    """The gallery DB: a named block, or ``settings.gallery_db_url`` (SQLite by default)."""
    settings = settings or get_settings()
    p = settings.publish
    if p.gallery_block:
        try:
            return GalleryDatabase.load(p.gallery_block)
        except ValueError as exc:
            raise PublishConfigError(
                f"publish.gallery_block {p.gallery_block!r}: no GalleryDatabase block ({exc})"
            ) from None
    return GalleryDatabase(
        url=settings.gallery_db_url, password=p.gallery_password, table=p.gallery_table
    )


def derivative_spec(target: PublishTarget, settings: Settings) -> DerivativeSpec:
    """Sizes and GPS policy: the target's own values, else the publish settings."""
    p = settings.publish

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return DerivativeSpec(
        full_long_edge=pick(target.full_long_edge, p.full_long_edge),
        thumb_long_edge=pick(target.thumb_long_edge, p.thumb_long_edge),
        quality=pick(target.jpeg_quality, p.jpeg_quality),
        keep_gps=pick(target.keep_gps, p.keep_gps),
    )
