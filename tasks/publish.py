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
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field
from sqlalchemy import select

from blocks.gallery_db import GalleryConnection, GalleryDatabase, GalleryRecord, GalleryUnavailable
from blocks.targets import (
    THUMB_FOLDER,
    LocalFolderTarget,
    PublishTarget,
    RemotePath,
    SftpTarget,
    TargetError,
    TargetUnavailable,
    UnsafeRemotePath,
    remote_path,
)
from galleryflow.db import ImageSet, PublishLog, ReviewRow, session_scope
from galleryflow.db.models import utcnow
from galleryflow.core.photo_facts import CameraFacts
from galleryflow.core.prefect_run import flow_run_id as current_flow_run_id
from galleryflow.core.prefect_run import run_logger
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import IllegalTransition, ProofStatus, RowStatus
from galleryflow.core.stages import ChunkReport, FileOutcome, chunked
from galleryflow.publishing.derivatives import (
    DerivativeError,
    DerivativeInput,
    Derivatives,
    DerivativeSpec,
    make_derivatives,
    work_folder,
)

STAGE = "publish"
TAG = "publish"
UPLOAD_IMAGE = "upload_image"
UPLOAD_THUMB = "upload_thumb"
UPSERT = "upsert"
INTERRUPTED = "interrupted: the run ended during this write (a later run resumed it)"
NETWORK_ERRORS: tuple[type[Exception], ...] = (TargetUnavailable, GalleryUnavailable)

_log = logging.getLogger(__name__)


class PublishConfigError(RuntimeError):
    """Publishing is misconfigured (no target block named, unknown block…)."""


class PublishIncomplete(RuntimeError):
    """A chunk ended with a blocking error: its rows stay approved; rerun to resume."""


# -------------------------------------------------------------------- configuration


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


# ---------------------------------------------------------------------------- names

_SUFFIX = re.compile(r"\.(jpe?g)$", re.IGNORECASE)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:120] or "photo"


def publish_file_name(web_file_name: str | None, original_name: str) -> str:
    """The published file name: the reviewed web name (checked, never rewritten) + .jpg.

    Only a row without a web name falls back to a slug of its original name.
    Raises :class:`UnsafeRemotePath` for a name that could leave the remote base.
    """
    if web_file_name is None or not web_file_name.strip():
        base = _slug(Path(original_name).stem)
    else:
        base = _SUFFIX.sub("", web_file_name.strip())
    return remote_path(f"{base}.jpg").name


def _headline(subject: str | None, caption: str | None) -> str | None:
    """A short title: the row's subject, else the caption's first sentence."""
    if subject:
        return subject.strip()[:120]
    if not caption:
        return None
    first = re.split(r"(?<=[.!?])\s", caption.strip(), maxsplit=1)[0]
    if len(first) > 120:
        first = first[:120].rsplit(" ", 1)[0] + "…"
    return first


# ------------------------------------------------------------------------ work units


@dataclass
class _Unit:
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


def _label(row: ReviewRow) -> str:
    return row.original_name


def _select(
    row_ids: Sequence[int], settings: Settings, report: ChunkReport, keep_gps: bool
) -> list[_Unit]:
    """Eligible rows as units; everything else reported (skipped or failed)."""
    units: list[_Unit] = []
    with session_scope(settings.db_url) as session:
        rows = {
            r.id: r
            for r in session.scalars(select(ReviewRow).where(ReviewRow.id.in_(list(row_ids))))
        }
        set_names = {
            s.id: s.name
            for s in session.scalars(
                select(ImageSet).where(ImageSet.id.in_({r.image_set_id for r in rows.values()}))
            )
        }
        for row_id in row_ids:
            row = rows.get(row_id)
            if row is None:
                report.add(f"row {row_id}", "failed", f"review row {row_id} does not exist")
                continue
            label = _label(row)
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
            if not row.incoming_path:
                report.add(label, "failed", "no incoming copy recorded for this row")
                continue
            try:
                name = publish_file_name(row.web_file_name, row.original_name)
            except UnsafeRemotePath as exc:
                report.add(label, "failed", f"web file name refused: {exc}")
                continue
            keywords = list(row.keywords or [])
            headline = _headline(row.subject, row.caption)
            units.append(
                _Unit(
                    row_id=row.id,
                    label=label,
                    source_key=f"{row.set_key}/{row.original_name}",
                    file_name=name,
                    image_dest=remote_path(name),
                    thumb_dest=remote_path(name, THUMB_FOLDER),
                    derivative_input=DerivativeInput(
                        row_id=row.id,
                        source_path=Path(row.incoming_path),
                        sha256=row.sha256,
                        object_name=name[:-4],
                        headline=headline,
                        caption=row.caption,
                        alt_text=row.alt_text,
                        keywords=keywords,
                    ),
                    facts=dict(
                        set_name=set_names.get(row.image_set_id),
                        title=headline,
                        caption=row.caption,
                        alt_text=row.alt_text,
                        keywords=keywords,
                        subject=row.subject,
                        location=row.location,
                        # the table says no more than the file: GPS only where the file
                        # keeps it; the size is the published image's, set later
                        **CameraFacts.of(row, keep_gps).model_dump(exclude={"width", "height"}),
                    ),
                )
            )
    return units


def _unique_names(units: list[_Unit], report: ChunkReport) -> list[_Unit]:
    seen: dict[str, str] = {}
    kept = []
    for unit in units:
        if unit.file_name in seen:
            report.add(
                unit.label,
                "failed",
                f"web file name {unit.file_name} is also used by "
                f"{seen[unit.file_name]} in this publish; names must be unique",
            )
            continue
        seen[unit.file_name] = unit.label
        kept.append(unit)
    return kept


def _build(
    units: list[_Unit], spec: DerivativeSpec, settings: Settings, report: ChunkReport
) -> list[_Unit]:
    """Derivatives for every unit, in threads (Pillow releases the GIL)."""
    if not units:
        return []

    def one(unit: _Unit) -> Derivatives | Exception:
        try:
            return make_derivatives(unit.derivative_input, spec, settings.work_dir)
        except DerivativeError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(settings.threads, len(units)))) as pool:
        results = list(pool.map(one, units))
    built = []
    for unit, result in zip(units, results, strict=True):
        if isinstance(result, Exception):
            report.add(unit.label, "failed", str(result))
            continue
        for warning in result.warnings:
            run_logger(_log).warning(warning)
        unit.derivatives = result
        built.append(unit)
    return built


def _check_owners(
    gallery: GalleryConnection, units: list[_Unit], report: ChunkReport
) -> list[_Unit]:
    """Never overwrite another photo: a name in the gallery must belong to this row's photo."""
    owners = gallery.owners([u.file_name for u in units])
    kept = []
    for unit in units:
        if unit.file_name in owners and owners[unit.file_name] != unit.source_key:
            report.add(
                unit.label,
                "failed",
                f"web file name {unit.file_name} already belongs to "
                f"{owners[unit.file_name] or 'another gallery row'}; choose another name in review",
            )
            continue
        kept.append(unit)
    return kept


# ---------------------------------------------------------------------- publish_log


class _Logbook:
    """``publish_log`` rows for one chunk: each remote write, around the write."""

    def __init__(
        self, settings: Settings, target: str, flow_run_id: str | None, row_ids: Iterable[int]
    ) -> None:
        self.url = settings.db_url
        self.target = target
        self.flow_run_id = flow_run_id
        with session_scope(self.url) as session:
            # A write still "started" belongs to a run that died during it (a live
            # attempt finishes its entries even when it fails): say so.
            for entry in session.scalars(
                select(PublishLog).where(
                    PublishLog.review_id.in_(list(row_ids)), PublishLog.status == "started"
                )
            ):
                entry.status = "failed"
                entry.detail = INTERRUPTED
            done = session.execute(
                select(
                    PublishLog.review_id,
                    PublishLog.action,
                    PublishLog.remote_path,
                    PublishLog.sha256,
                ).where(
                    PublishLog.review_id.in_(list(row_ids)),
                    PublishLog.target == target,
                    PublishLog.status == "done",
                )
            )
            self.done = {tuple(r) for r in done}

    def was_done(self, review_id: int, action: str, path: str, sha256: str) -> bool:
        return (review_id, action, path, sha256) in self.done

    def start(
        self, review_id: int, action: str, path: str, sha256: str | None, size: int | None
    ) -> int:
        return self.start_many([(review_id, action, path, sha256, size)])[0]

    def start_many(
        self,
        entries: Sequence[tuple[int, str, str, str | None, int | None]],
        target: str | None = None,
    ) -> list[int]:
        with session_scope(self.url) as session:
            rows = [
                PublishLog(
                    review_id=review_id,
                    action=action,
                    target=target or self.target,
                    remote_path=path,
                    sha256=sha256,
                    size=size,
                    status="started",
                    flow_run_id=self.flow_run_id,
                )
                for review_id, action, path, sha256, size in entries
            ]
            session.add_all(rows)
            session.flush()
            return [r.id for r in rows]

    def finish(self, log_ids: Sequence[int], status: str, detail: str | None = None) -> None:
        with session_scope(self.url) as session:
            for entry in session.scalars(
                select(PublishLog).where(PublishLog.id.in_(list(log_ids)))
            ):
                entry.status = status
                entry.detail = detail[:4000] if detail else None


# -------------------------------------------------------------------------- uploads


def _upload(
    remote: Any, book: _Logbook, unit: _Unit, action: str, local: Any, dest: RemotePath
) -> None:
    """Upload one file unless it is already there; log the write around it."""
    if remote.size(dest) == local.size:
        if book.was_done(unit.row_id, action, dest.relative, local.sha256):
            unit.resumed.append(dest.relative)
            return
        # Written by a run that died before logging "done": recognise it by content.
        if remote.sha256(dest) == local.sha256:
            log_id = book.start(unit.row_id, action, dest.relative, local.sha256, local.size)
            book.finish([log_id], "done", "found complete on the target after an interrupted run")
            unit.resumed.append(dest.relative)
            return
    log_id = book.start(unit.row_id, action, dest.relative, local.sha256, local.size)
    try:
        remote.upload(local.path, dest)
    except BaseException as exc:
        book.finish([log_id], "failed", f"{type(exc).__name__}: {exc}")
        raise
    book.finish([log_id], "done")


def _upload_all(
    target: PublishTarget, book: _Logbook, units: list[_Unit], report: ChunkReport
) -> list[_Unit]:
    uploaded = []
    with target.open_session() as remote:  # one connection for the whole chunk
        for unit in units:
            assert unit.derivatives is not None
            try:
                _upload(remote, book, unit, UPLOAD_IMAGE, unit.derivatives.image, unit.image_dest)
                _upload(
                    remote, book, unit, UPLOAD_THUMB, unit.derivatives.thumbnail, unit.thumb_dest
                )
            except TargetUnavailable:
                raise  # the connection is gone for every row: retry the chunk
            except (TargetError, UnsafeRemotePath, OSError) as exc:
                report.add(unit.label, "failed", f"upload of {unit.file_name} failed: {exc}")
                continue
            uploaded.append(unit)
    return uploaded


# --------------------------------------------------------------------------- upsert


def _records(units: list[_Unit], target: PublishTarget, now: datetime) -> list[GalleryRecord]:
    records = []
    for unit in units:
        d = unit.derivatives
        assert d is not None
        records.append(
            GalleryRecord(
                file_name=unit.file_name,
                source_key=unit.source_key,
                **unit.facts,
                width=d.image.width,
                height=d.image.height,
                thumb_width=d.thumbnail.width,
                thumb_height=d.thumbnail.height,
                image_path=unit.image_dest.relative,
                thumbnail_path=unit.thumb_dest.relative,
                image_url=target.url_for(unit.image_dest),
                thumbnail_url=target.url_for(unit.thumb_dest),
                image_bytes=d.image.size,
                image_sha256=d.image.sha256,
                published_at=now,
            )
        )
    return records


def _upsert(
    gallery: GalleryConnection,
    where: str,
    book: _Logbook,
    units: list[_Unit],
    records: list[GalleryRecord],
    now: datetime,
) -> dict[str, str]:
    log_ids = book.start_many(
        [(u.row_id, UPSERT, u.file_name, None, None) for u in units], target=where
    )
    try:
        ids = gallery.upsert(records, now)
    except BaseException as exc:
        book.finish(log_ids, "failed", f"{type(exc).__name__}: {exc}")
        raise
    book.finish(log_ids, "done")
    return ids


# ----------------------------------------------------------------------- local rows


def _mark_published(
    units: list[_Unit],
    records: list[GalleryRecord],
    ids: dict[str, str],
    settings: Settings,
    report: ChunkReport,
    now: datetime,
) -> list[int]:
    published = []
    with session_scope(settings.db_url) as session:
        for unit, record in zip(units, records, strict=True):
            remote_id = ids.get(unit.file_name)
            row = session.get(ReviewRow, unit.row_id)
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


# ------------------------------------------------------------------------ the stage


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

    units = _unique_names(_select(row_ids, settings, report, spec.keep_gps), report)
    units = _build(units, spec, settings, report)
    if units:
        book = _Logbook(settings, target.describe(), flow_run_id, [u.row_id for u in units])
        with gallery.connect() as g:
            g.ensure_table()
            units = _check_owners(g, units, report)
            units = _upload_all(target, book, units, report)
            now = utcnow().replace(microsecond=0)
            records = _records(units, target, now)
            ids = _upsert(g, f"{gallery.safe_url()}#{gallery.table}", book, units, records, now)
        _mark_published(units, records, ids, settings, report, now)
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
    tags=[TAG],
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_on_network_error,
    cache_policy=NO_CACHE,  # a writer: never skipped by a cache hit
    persist_result=False,
)
def publish_chunk(row_ids: list[int], flow_run_id: str | None = None) -> ChunkReport:
    """Prefect task: publish one chunk of approved rows (see :func:`publish_rows`)."""
    if flow_run_id is None:
        flow_run_id = current_flow_run_id()
    return publish_rows(row_ids, settings=get_settings(), flow_run_id=flow_run_id)


# ------------------------------------------------------------------ whole publish


class PublishSummary(BaseModel):
    published: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    outcomes: list[FileOutcome] = Field(default_factory=list)
    blocking_errors: list[str] = Field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.blocking_errors


def summarize(
    reports: Sequence[ChunkReport], blocking: Sequence[tuple[list[int], str]] = ()
) -> PublishSummary:
    summary = PublishSummary()
    for report in reports:
        for outcome in report.outcomes:
            summary.outcomes.append(outcome)
            bucket = {
                "ok": summary.published,
                "warning": summary.published,
                "skipped": summary.skipped,
            }.get(outcome.outcome, summary.failed)
            bucket.append(outcome.file)
    for row_ids, error in blocking:
        summary.blocking_errors.append(error)
        for row_id in row_ids:
            summary.failed.append(f"row {row_id}")
            summary.outcomes.append(
                FileOutcome(
                    file=f"row {row_id}",
                    stage=STAGE,
                    outcome="failed",
                    message=f"not published (left approved): {error}",
                )
            )
    return summary


def summary_markdown(summary: PublishSummary) -> str:
    lines = [
        f"**Publish**: {len(summary.published)} published, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed."
    ]
    for error in summary.blocking_errors:
        lines.append(f"\n⚠ Blocking error (rows left approved; rerun to resume): {error}")
    return "\n".join(lines)


def publish_summary_artifact(summary: PublishSummary, key: str = "publish-summary") -> None:
    """A table artifact (published, skipped, failed per file), when in a Prefect run."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    from prefect.artifacts import create_table_artifact

    table = [
        {
            "file": o.file,
            "outcome": {"ok": "published"}.get(o.outcome, o.outcome),
            "detail": o.message,
        }
        for o in summary.outcomes
    ]
    try:
        create_table_artifact(table=table, key=key, description=summary_markdown(summary))
    except Exception as exc:  # the publish itself is done; never fail it for a report
        run_logger(_log).warning("could not create the publish summary artifact: %s", exc)


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
            select(ReviewRow).where(
                ReviewRow.id.in_(list(row_ids)), ReviewRow.status == RowStatus.PUBLISHED
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


def publishable_row_ids(
    settings: Settings | None = None, image_set_ids: Sequence[int] | None = None,
    row_ids: Sequence[int] | None = None,
) -> list[int]:
    """Rows waiting to be published: approved with a passing proof (optionally per set
    or among ``row_ids``)."""
    settings = settings or get_settings()
    query = select(ReviewRow.id).where(
        ReviewRow.status == RowStatus.APPROVED, ReviewRow.proof_status == ProofStatus.PASSED
    )
    if image_set_ids is not None:
        query = query.where(ReviewRow.image_set_id.in_(list(image_set_ids)))
    if row_ids is not None:
        query = query.where(ReviewRow.id.in_(list(row_ids)))
    with session_scope(settings.db_url) as session:
        return list(session.scalars(query.order_by(ReviewRow.id)))


def publish_approved(
    row_ids: Sequence[int], settings: Settings | None = None, flow_run_id: str | None = None
) -> PublishSummary:
    """Publish ``row_ids`` in chunks and write the summary artifact.

    Inside a flow the chunks run as ``publish-chunk`` task runs (tag ``publish``,
    retries on network errors); outside one they run in this process, in turn.
    Work files are removed when no chunk ended with a blocking error. Raises
    :class:`PublishIncomplete` (after the artifact) when one did: those rows
    stay approved and a rerun resumes them.
    """
    from prefect.context import FlowRunContext

    settings = settings or get_settings()
    ids = list(dict.fromkeys(row_ids))
    chunks = list(chunked(ids, settings.chunk_size))
    progress = StageProgress(STAGE, len(ids), key="publish-progress")
    reports: list[ChunkReport] = []
    blocking: list[tuple[list[int], str]] = []
    if FlowRunContext.get() is not None:
        runner = publish_chunk.with_options(
            retries=settings.publish.retries,
            retry_delay_seconds=exponential_backoff(
                backoff_factor=settings.publish.retry_delay_seconds
            ),
        )
        futures = [(chunk, runner.submit(chunk, flow_run_id)) for chunk in chunks]
        for chunk, future in futures:
            try:
                reports.append(future.result())
            except Exception as exc:
                blocking.append((chunk, f"{type(exc).__name__}: {exc}"))
            progress.advance(len(chunk))
    else:
        for chunk in chunks:
            try:
                reports.append(publish_rows(chunk, settings=settings, flow_run_id=flow_run_id))
            except Exception as exc:
                blocking.append((chunk, f"{type(exc).__name__}: {exc}"))
            progress.advance(len(chunk))
    summary = summarize(reports, blocking)
    publish_summary_artifact(summary)
    run_logger(_log).info(summary_markdown(summary).replace("**", ""))
    if not summary.complete:
        raise PublishIncomplete("; ".join(summary.blocking_errors))
    cleanup_work_files(ids, settings)
    if settings.publish.target == "local" and not settings.publish.target_block:
        write_site_index(settings)
    return summary


def write_site_index(settings: Settings | None = None) -> Path:
    """``index.html`` in the local site folder: every gallery row, newest first.

    Makes the embedded default's site folder browsable (``make demo``); a real
    site renders the gallery table itself.
    """
    from html import escape as html

    from galleryflow.core.fsutil import atomic_write_text

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


def ensure_publish_concurrency_limit(settings: Settings | None = None) -> None:
    """Create or update the ``publish`` tag concurrency limit (for ``galleryflow setup``)."""
    from prefect.client.orchestration import get_client

    settings = settings or get_settings()
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=TAG, concurrency_limit=settings.publish.concurrency)
