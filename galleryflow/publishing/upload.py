"""Uploads: a unit's image and thumbnail onto the target, skipped when already there."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from blocks.targets import (
    PublishTarget,
    RemotePath,
    TargetError,
    TargetUnavailable,
    UnsafeRemotePath,
)
from galleryflow.core.stages import ChunkReport
from galleryflow.publishing.journal import UPLOAD_IMAGE, UPLOAD_THUMB, PublishJournal
from galleryflow.publishing.units import PublishUnit


def upload_file(
    remote: Any,
    journal: PublishJournal,
    unit: PublishUnit,
    action: str,
    local: Any,
    dest: RemotePath,
) -> None:
    """Upload one file unless it is already there; log the write around it."""
    if remote.size(dest) == local.size:
        if journal.was_done(unit.row_id, action, dest.relative, local.sha256):
            unit.resumed.append(dest.relative)
            return
        # Written by a run that died before logging "done": recognise it by content.
        if remote.sha256(dest) == local.sha256:
            log_id = journal.start(unit.row_id, action, dest.relative, local.sha256, local.size)
            journal.finish(
                [log_id], "done", "found complete on the target after an interrupted run"
            )
            unit.resumed.append(dest.relative)
            return
    log_id = journal.start(unit.row_id, action, dest.relative, local.sha256, local.size)
    try:
        remote.upload(local.path, dest)
    except BaseException as exc:
        journal.finish([log_id], "failed", f"{type(exc).__name__}: {exc}")
        raise
    journal.finish([log_id], "done")


def upload_units(
    target: PublishTarget, journal: PublishJournal, units: Iterable[PublishUnit],
    report: ChunkReport,
) -> list[PublishUnit]:
    """Both files of every unit over one session, each unit as it comes (from
    :func:`~galleryflow.publishing.units.build_derivatives`, as its images are made); a
    row-level fault fails that row only.

    Raises :class:`TargetUnavailable` when the connection is gone (every row would fail).
    """
    uploaded = []
    with target.open_session() as remote:  # one connection for the whole chunk
        for unit in units:
            assert unit.derivatives is not None
            try:
                upload_file(
                    remote, journal, unit, UPLOAD_IMAGE, unit.derivatives.image, unit.image_dest
                )
                upload_file(
                    remote, journal, unit, UPLOAD_THUMB, unit.derivatives.thumbnail,
                    unit.thumb_dest,
                )
            except TargetUnavailable:
                raise  # the connection is gone for every row: retry the chunk
            except (TargetError, UnsafeRemotePath, OSError) as exc:
                report.add(unit.label, "failed", f"upload of {unit.file_name} failed: {exc}")
                continue
            uploaded.append(unit)
    return uploaded
