"""Stage 9: publish approved rows to the site (files) and the gallery table (rows).

Only rows with status ``approved`` **and** proof ``passed`` are published; every
other row in the request is reported as skipped, never touched.

Each row is one resumable unit, in this order::

    derivatives (work/)  →  upload image, upload thumbnail  →  gallery upsert (bulk,
    per chunk)  →  remote id, URLs, published_at, status ``published`` (ORM: the
    status machine applies)

Every remote write is logged in ``publish_log`` (``started`` → ``done`` |
``failed``) *around* the write. Kill the process anywhere and rerun:

- an upload whose log says ``done`` (same target, path, sha256) and whose remote
  size matches is skipped; one that finished but whose ``done`` was never logged
  is recognised by reading the remote file's sha256 back; a half-written one only
  ever existed under its temporary name and is simply written again;
- the upsert is keyed on ``File_Name``, so repeating it updates the same gallery
  row (same id) instead of adding one;
- the local row becomes ``published`` only after both files are on the target
  and the gallery transaction has committed. A gallery database that is down
  therefore leaves rows ``approved`` (the uploads already made are kept and
  skipped next time).

Network errors (target or gallery unreachable) raise from the chunk, so Prefect
retries it with backoff (``publish.retries``); inside a chunk the SFTP session
reconnects on a dropped connection (tenacity), which Prefect cannot do.
Row-level faults (a file name that would escape the remote base, a name taken
by another photo, an unreadable incoming copy) fail that row only, with a
message naming the file and the fault.

This module holds the review-row I/O (which rows to publish, marking them
published), the chunk (:func:`publish_rows`, and :func:`publish_chunk`, its task
run, which holds one slot of the global concurrency limit ``publish``) and the
collecting step after the chunks (:func:`finish_publish`). The plain parts live
in :mod:`galleryflow.publishing` (names, units, journal, upload, upsert,
summary, site index, cleanup); the fan-out of the chunks is
``flows.fanout.publish_approved``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task, exponential_backoff
from sqlalchemy import select

from blocks.gallery_db import GalleryDatabase, GalleryRecord, GalleryUnavailable, UpsertResult
from blocks.targets import PublishTarget, TargetUnavailable, UnsafeRemotePath
from galleryflow.core.prefect_run import flow_run_id as current_flow_run_id
from galleryflow.core.prefect_run import limit_slot, run_logger
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.stages import ChunkReport
from galleryflow.core.status import IllegalTransition, ProofStatus, RowStatus, SetStatus
from galleryflow.db import ImageSet, Photo, session_scope
from galleryflow.db.models import utcnow
from galleryflow.db.names import reserve
from galleryflow.publishing.cleanup import cleanup_work_files, published_leftovers
from galleryflow.publishing.config import derivative_spec, resolve_gallery, resolve_target
from galleryflow.publishing.derivatives import ahead_workers, drop_ahead, make_ahead
from galleryflow.publishing.hold import held_message, holding_rows
from galleryflow.publishing.journal import PublishJournal
from galleryflow.publishing.names import publish_file_name
from galleryflow.publishing.site_index import write_site_index
from galleryflow.publishing.summary import (
    STAGE,
    PublishIncomplete,
    PublishSummary,
    publish_summary_artifact,
    summarize,
    summary_markdown,
)
from galleryflow.publishing.units import (
    PublishUnit,
    build_derivatives,
    check_owners,
    unique_names,
    unit_for_row,
)
from galleryflow.publishing.upload import upload_units
from galleryflow.publishing.upsert import gallery_records, upsert_records

PUBLISH_LIMIT = "publish"  # the global concurrency limit a chunk holds one slot of
NETWORK_ERRORS: tuple[type[Exception], ...] = (TargetUnavailable, GalleryUnavailable)

_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ review rows


def uncommitted_sessions() -> Any:
    """The ids of sessions not committed (still running, or a rollback left to finish):
    nothing of theirs is shown for review or published."""
    return select(ImageSet.id).where(
        ImageSet.status.in_([SetStatus.RUNNING, SetStatus.ROLLBACK_FAILED]))


def publishable_row_ids(
    settings: Settings | None = None, image_set_ids: Sequence[int] | None = None,
    row_ids: Sequence[int] | None = None, set_keys: Sequence[str] | None = None,
) -> list[int]:
    """Rows waiting to be published: approved with a passing proof, of a committed
    session (optionally per session, per set or among ``row_ids``)."""
    settings = settings or get_settings()
    query = select(Photo.id).where(
        Photo.status == RowStatus.APPROVED, Photo.proof_status == ProofStatus.PASSED,
        Photo.image_set_id.notin_(uncommitted_sessions()),
    )
    if set_keys is not None:
        query = query.where(Photo.set_key.in_(list(set_keys)))
    if image_set_ids is not None:
        query = query.where(Photo.image_set_id.in_(list(image_set_ids)))
    if row_ids is not None:
        query = query.where(Photo.id.in_(list(row_ids)))
    with session_scope(settings.db_url) as session:
        return list(session.scalars(query.order_by(Photo.id)))


def make_web_images_ahead(row_ids: Sequence[int], settings: Settings | None = None) -> int:
    """Stage 7's head start on the publish: the web images of the rows whose draft passed,
    made in the background as if the words were approved unchanged
    (:func:`galleryflow.publishing.derivatives.make_ahead`; nothing is published, and a
    row's images are made again at the publish if its words change). Never fails:
    returns how many were started (0 when the target cannot be resolved)."""
    try:
        settings = settings or get_settings()
        spec = derivative_spec(resolve_target(settings), settings)
        items = []
        with session_scope(settings.db_url) as session:
            for row in session.scalars(select(Photo).where(
                    Photo.id.in_(list(row_ids)), Photo.status == RowStatus.AWAITING_REVIEW,
                    Photo.proof_status == ProofStatus.PASSED)):
                if not row.incoming_path:
                    continue
                try:
                    name = publish_file_name(row.web_file_name, row.original_name)
                except UnsafeRemotePath:
                    continue
                items.append(unit_for_row(row, name, None, spec.keep_gps).derivative_input)
        return make_ahead(items, spec, settings.work_dir, owner=current_flow_run_id())
    except Exception as exc:  # an optimisation only: the publish does the work anyway
        _log.debug("web images not made ahead: %s", exc)
        return 0


def drop_web_images_ahead() -> int:
    """At the end of this flow run's publish (or of a run that never reached one): the
    web images it queued ahead and no worker started are forgotten
    (:func:`galleryflow.publishing.derivatives.drop_ahead`); how many."""
    return drop_ahead(current_flow_run_id())


@contextmanager
def web_images_ahead_while_waiting(row_ids: Sequence[int], settings: Settings) -> Iterator[None]:
    """While the block runs (the review gate), the web images of ``row_ids`` not made yet
    are made on every core: stage 7 has ended, and the publish that follows the
    person's answer is bound by this work. Rows queued by stage 7 are not queued again;
    rows of an earlier run (the ``review-publish`` flow) are queued here."""
    make_web_images_ahead(row_ids, settings)
    with ahead_workers(min(os.cpu_count() or 1, settings.threads)):  # io_threads caps it
        yield


def _select(
    row_ids: Sequence[int], settings: Settings, report: ChunkReport, keep_gps: bool
) -> list[PublishUnit]:
    """Eligible rows as units; everything else reported (skipped or failed)."""
    units: list[PublishUnit] = []
    with session_scope(settings.db_url) as session:
        rows = {
            r.id: r
            for r in session.scalars(select(Photo).where(Photo.id.in_(list(row_ids))))
        }
        sets = {
            s.id: s
            for s in session.scalars(
                select(ImageSet).where(ImageSet.id.in_({r.image_set_id for r in rows.values()}))
            )
        }
        # The zero-blocked rule (galleryflow.publishing.hold), unless relaxed for this run.
        held = {} if settings.publish.allow_blocked_sets else holding_rows(
            session, {r.set_key for r in rows.values() if r.status == RowStatus.APPROVED})
        for row_id in row_ids:
            row = rows.get(row_id)
            if row is None:
                report.add(f"row {row_id}", "failed", f"review row {row_id} does not exist")
                continue
            label = row.original_name
            if row.status == RowStatus.PUBLISHED:
                report.add(label, "skipped", f"already published as {row.public_url}")
                continue
            if row.status != RowStatus.APPROVED:
                report.add(label, "skipped", f"not approved (status {row.status}): not published")
                continue
            if row.proof_status != ProofStatus.PASSED:
                report.add(
                    label,
                    "skipped",
                    f"metadata proof is {row.proof_status}: "
                    "never published without a passing proof",
                )
                continue
            if row.set_key in held:
                report.add(label, "skipped", held_message(row.set_key, held[row.set_key]))
                continue
            if not row.incoming_path:
                report.add(label, "failed", "no incoming copy recorded for this row")
                continue
            try:
                name = publish_file_name(row.web_file_name, row.original_name)
            except UnsafeRemotePath as exc:
                report.add(label, "failed", f"web file name refused: {exc}")
                continue
            # The name must be this photo's reservation (made when its draft was
            # accepted; made now for rows from before reservations): the state DB's
            # unique key, not an earlier read, keeps two photos off one name.
            other = reserve(session, row.id, name, release_others=False)
            if other is not None:
                owner = session.get(Photo, other) if other > 0 else None
                report.add(label, "failed", f"web file name {name} is reserved by another photo"
                           f"{f' ({owner.set_key}/{owner.original_name})' if owner else ''}; "
                           "choose another name in review")
                continue
            image_set = sets.get(row.image_set_id)
            units.append(unit_for_row(row, name, image_set.name if image_set else None, keep_gps,
                                      set_location=image_set.location if image_set else None))
    return units


def _mark_published(
    units: list[PublishUnit],
    records: list[GalleryRecord],
    upserted: UpsertResult,
    settings: Settings,
    report: ChunkReport,
    now: datetime,
) -> list[int]:
    published = []
    with session_scope(settings.db_url) as session:
        for unit, record in zip(units, records, strict=True):
            remote_id = upserted.ids.get(unit.file_name)
            row = session.get(Photo, unit.row_id)
            if unit.file_name in upserted.refused:
                report.add(unit.label, "failed", f"gallery refused {unit.file_name}: "
                           f"{upserted.refused[unit.file_name]}")
                continue
            if remote_id is None or row is None:
                report.add(
                    unit.label,
                    "failed",
                    f"{unit.file_name} missing from the gallery after the upsert",
                )
                continue
            try:
                row.status = RowStatus.PUBLISHED  # the status machine: only approved → published
            except IllegalTransition:
                report.add(
                    unit.label,
                    "failed",
                    f"row became {row.status} during publish; the gallery holds it as id "
                    f"{remote_id}: approve it again to finish",
                )
                continue
            row.remote_id = remote_id
            row.public_url = record.image_url
            row.thumbnail_url = record.thumbnail_url
            row.published_at = now
            row.error = None
            row.error_category = None
            note = " (files were already on the target: resumed)" if unit.resumed else ""
            report.add(
                unit.label, "ok", f"published as {record.image_url} (gallery id {remote_id}){note}"
            )
            published.append(unit.row_id)
    return published


# ------------------------------------------------------------------------ one chunk


def publish_rows(
    row_ids: Sequence[int],
    *,
    settings: Settings | None = None,
    target: PublishTarget | None = None,
    gallery: GalleryDatabase | None = None,
    flow_run_id: str | None = None,
    progress: StageProgress | None = None,
) -> ChunkReport:
    """Publish these rows (one chunk): plain function, no Prefect needed.

    Returns the chunk's per-row outcomes (``ok`` = published, ``skipped``,
    ``failed``). Raises :class:`TargetUnavailable` / :class:`GalleryUnavailable`
    when the target or gallery cannot be reached (retry), and
    :class:`~blocks.targets.HostKeyRejected` or other ``TargetError`` when the
    target refuses the connection (fix the configuration).
    """
    settings = settings or get_settings()
    target = target or resolve_target(settings)
    gallery = gallery or resolve_gallery(settings)
    report = ChunkReport(stage=STAGE)
    spec = derivative_spec(target, settings)
    row_ids = list(dict.fromkeys(row_ids))

    units = unique_names(_select(row_ids, settings, report, spec.keep_gps), report)
    if units:
        journal = PublishJournal(
            settings, target.describe(), flow_run_id, [u.row_id for u in units]
        )
        with gallery.connect() as g:
            g.ensure_table()
            units = check_owners(g, units, report)  # before any image is made or sent
            # Each unit is uploaded as soon as its images are made, while the others
            # are being made: the uploads' waits overlap the CPU work.
            units = upload_units(
                target, journal, build_derivatives(units, spec, settings, report), report)
            now = utcnow().replace(microsecond=0)
            records = gallery_records(units, target, now)
            upserted = upsert_records(
                g, f"{gallery.safe_url()}#{gallery.table}", journal, units, records, now
            )
        _mark_published(units, records, upserted, settings, report, now)
    if progress is not None:
        progress.advance(len(row_ids))
    report.outcomes.sort(key=lambda o: o.file)  # stable order for tables and tests
    return report


def _retry_on_network_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retries a chunk only for errors a later attempt can fix."""
    try:
        state.result()
    except NETWORK_ERRORS:
        return True
    except Exception:
        return False
    return False


@task(
    name="publish-chunk",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_on_network_error,
    cache_policy=NO_CACHE,  # a writer: never skipped by a cache hit
    persist_result=False,
)
def publish_chunk(row_ids: list[int], flow_run_id: str | None = None) -> ChunkReport:
    """Prefect task: publish one chunk of approved rows (see :func:`publish_rows`).

    Holds one slot of the global concurrency limit ``publish`` while it works
    (waiting at most ``publish.slot_wait_seconds`` for it).
    """
    if flow_run_id is None:
        flow_run_id = current_flow_run_id()
    settings = get_settings()
    with limit_slot(PUBLISH_LIMIT, settings.publish.slot_wait_seconds):
        return publish_rows(row_ids, settings=settings, flow_run_id=flow_run_id)


def publish_chunk_task(settings: Settings) -> Task[..., ChunkReport]:
    """:func:`publish_chunk` with the retries of ``settings.publish``."""
    return publish_chunk.with_options(
        retries=settings.publish.retries,
        retry_delay_seconds=exponential_backoff(
            backoff_factor=settings.publish.retry_delay_seconds
        ),
    )


# ------------------------------------------------------------------ after the chunks


def _held_sets(row_ids: Sequence[int], settings: Settings) -> tuple[list[str], bool]:
    """Lines for the summary: each set held back by the zero-blocked rule and why (or,
    with the rule relaxed, which sets it would have held)."""
    with session_scope(settings.db_url) as session:
        keys = set(session.scalars(select(Photo.set_key).where(Photo.id.in_(list(row_ids)))))
        held = holding_rows(session, keys)
    return [held_message(k, rows) for k, rows in sorted(held.items())], \
        settings.publish.allow_blocked_sets


def finish_publish(
    row_ids: Sequence[int],
    reports: Sequence[ChunkReport],
    blocking: Sequence[tuple[list[int], str]],
    settings: Settings,
) -> PublishSummary:
    """Summarise a whole publish (artifact, log line); then clean up and index the site.

    Work files are removed when no chunk ended with a blocking error. Raises
    :class:`PublishIncomplete` (after the artifact) when one did: those rows
    stay approved and a rerun resumes them.
    """
    summary = summarize(reports, blocking)
    summary.held, summary.rule_relaxed = _held_sets(row_ids, settings)
    publish_summary_artifact(summary)
    run_logger(_log).info(summary_markdown(summary).replace("**", ""))
    if not summary.complete:
        # The rows that did get published need their work files no more either.
        cleanup_work_files(published_leftovers(settings), settings)
        raise PublishIncomplete("; ".join(summary.blocking_errors))
    cleanup_work_files(row_ids, settings)
    if settings.publish.target == "local" and not settings.publish.target_block:
        write_site_index(settings)
    return summary
