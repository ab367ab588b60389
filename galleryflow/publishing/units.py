"""Publish units: one eligible row each, detached from the ORM, and the checks and
derivatives a unit needs before anything is written remotely."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocks.gallery_db import GalleryConnection, fold
from blocks.targets import THUMB_FOLDER, RemotePath, remote_path
from galleryflow.core.photo_facts import CameraFacts
from galleryflow.core.prefect_run import run_logger
from galleryflow.core.settings import Settings
from galleryflow.core.stages import ChunkReport
from galleryflow.db import Photo
from galleryflow.publishing.derivatives import (
    DerivativeError,
    DerivativeInput,
    Derivatives,
    DerivativeSpec,
    make_derivatives,
)
from galleryflow.publishing.names import headline

_log = logging.getLogger(__name__)


@dataclass
class PublishUnit:
    """One eligible row, detached from the ORM session."""

    row_id: int
    label: str
    source_key: str
    file_name: str
    image_dest: RemotePath
    thumb_dest: RemotePath
    derivative_input: DerivativeInput
    facts: dict[str, Any]
    derivatives: Derivatives | None = None
    resumed: list[str] = field(default_factory=list)


def unit_for_row(
    row: Photo, file_name: str, set_name: str | None, keep_gps: bool,
    set_location: str | None = None,
) -> PublishUnit:
    """The unit of an eligible row (approved, proof passed, with an incoming copy),
    published as ``file_name`` (checked by ``publish_file_name``). The gallery's
    Location is the photo's own, else its set's (``--location``), as captioning uses."""
    keywords = list(row.keywords or [])
    title = headline(row.subject, row.caption)
    return PublishUnit(
        row_id=row.id,
        label=row.original_name,
        source_key=f"{row.set_key}/{row.original_name}",
        file_name=file_name,
        image_dest=remote_path(file_name),
        thumb_dest=remote_path(file_name, THUMB_FOLDER),
        derivative_input=DerivativeInput(
            row_id=row.id,
            source_path=Path(row.incoming_path),
            sha256=row.sha256,
            object_name=file_name[:-4],
            headline=title,
            caption=row.caption,
            alt_text=row.alt_text,
            keywords=keywords,
        ),
        facts=dict(
            set_name=set_name,
            title=title,
            caption=row.caption,
            alt_text=row.alt_text,
            keywords=keywords,
            subject=row.subject,
            location=row.location or set_location,
            # the table says no more than the file: GPS only where the file
            # keeps it; the size is the published image's, set later
            **CameraFacts.of(row, keep_gps).model_dump(exclude={"width", "height"}),
        ),
    )


def unique_names(units: list[PublishUnit], report: ChunkReport) -> list[PublishUnit]:
    """Units whose file name (case-folded, as the gallery compares) no earlier unit of
    this publish uses; the others fail."""
    seen: dict[str, str] = {}
    kept = []
    for unit in units:
        key = fold(unit.file_name)
        if key in seen:
            report.add(
                unit.label,
                "failed",
                f"web file name {unit.file_name} is also used by "
                f"{seen[key]} in this publish; names must be unique",
            )
            continue
        seen[key] = unit.label
        kept.append(unit)
    return kept


def build_derivatives(
    units: list[PublishUnit], spec: DerivativeSpec, settings: Settings, report: ChunkReport
) -> Iterator[PublishUnit]:
    """Derivatives for every unit, in threads (Pillow releases the GIL): each unit, in
    the order given, as soon as its images are made, so that the caller uploads it
    while the next ones are made — the uploads' waits (an fsync or a network round trip
    per file) then overlap the decoding and resizing. A unit whose images cannot be
    made is reported failed and not yielded. Closing the iterator early waits for the
    images under way (nothing is left running)."""
    if not units:
        return

    def one(unit: PublishUnit) -> Derivatives | Exception:
        try:
            return make_derivatives(unit.derivative_input, spec, settings.work_dir)
        except DerivativeError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(settings.threads, len(units)))) as pool:
        futures = {pool.submit(one, unit): unit for unit in units}
        try:
            for future, unit in futures.items():
                result = future.result()
                if isinstance(result, Exception):
                    report.add(unit.label, "failed", str(result))
                    continue
                for warning in result.warnings:
                    run_logger(_log).warning(warning)
                unit.derivatives = result
                yield unit
        finally:
            for future in futures:
                future.cancel()  # those not started; the pool's exit waits for the rest


def check_owners(
    gallery: GalleryConnection, units: list[PublishUnit], report: ChunkReport
) -> list[PublishUnit]:
    """Never overwrite another photo: a name in the gallery (compared the way its
    collation compares, ignoring case) must belong to this row's photo, under the
    same spelling. Checked before any upload; the upsert checks again in its own
    transaction."""
    owners = gallery.owners([u.file_name for u in units])
    kept = []
    for unit in units:
        held = owners.get(fold(unit.file_name))
        if held is not None and (held[0] != unit.file_name or held[1] != unit.source_key):
            report.add(
                unit.label,
                "failed",
                f"web file name {unit.file_name} is taken in the gallery by {held[0]} "
                f"({held[1] or 'a row the site made itself'}); choose another name in review",
            )
            continue
        kept.append(unit)
    return kept
