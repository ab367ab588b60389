"""Stage 6: the image the vision model sees.

From each row's incoming copy: one draft-mode decode with EXIF orientation
applied, long edge bounded by ``settings.model_resize.long_edge`` (default 1024),
JPEG at ``settings.model_resize.quality`` (85) into ``work/<set>/``, written
atomically. The row's ``ollama_path`` points at it. In ``process-sets`` the
decode is the one stage 5 made of the photo (:mod:`tasks.score_and_resize`,
:mod:`galleryflow.imaging.shared`); alone (a rerun after a cleanup, stage 7
making up a missing image) this stage decodes the photo itself, the same way.
An incoming copy that no longer carries the stamp intake recorded fails its
row: its image would be named for a sha256 it is not made from.

The file name carries the source's sha256 and the long edge, so a file that
exists is the right one: a rerun (or another session of the same set) reuses it
instead of decoding again, and a changed photo or setting gets a new file.
A file this session writes is recorded in its ledger first, so a rollback
removes it. Pillow releases the GIL while decoding and encoding, so a chunk's
images are processed on threads.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from prefect import task
from PIL import Image
from pydantic import BaseModel
from sqlalchemy import select

from galleryflow.db.engine import session_scope
from galleryflow.db.models import Photo
from galleryflow.core.fsutil import FileStamp
from galleryflow.imaging.shared import SharedDecodes, open_derived
from galleryflow.imaging.shared import current as current_shared
from galleryflow.imaging.encode import write
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import LOCKED_STATUSES, RowStatus
from galleryflow.core.stages import ChunkReport
from galleryflow.core.workers import map_all
from tasks.rowstate import snapshot_row

STAGE = "model_resize"
_SAFE_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")


class ResizeJob(BaseModel):
    row_id: int
    file: str
    source: str
    target: str


def set_dir_name(set_key: str) -> str:
    """``set_key`` as one safe directory name (no separators, no ``..``, bounded)."""
    if _SAFE_DIR.fullmatch(set_key) and ".." not in set_key:
        return set_key
    readable = re.sub(r"[^A-Za-z0-9]+", "-", set_key).strip("-")[:80] or "set"
    return f"{readable}-{hashlib.sha1(set_key.encode()).hexdigest()[:10]}"


def model_image_path(settings: Settings, set_key: str, original_name: str, sha256: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(original_name).stem).strip("-")[:80] or "image"
    edge = settings.model_resize.long_edge
    return settings.work_dir / set_dir_name(set_key) / f"{stem}-{sha256[:12]}-{edge}.jpg"


def write_model_image(source: Path, target: Path, long_edge: int, quality: int,
                      decode_edge: int | None = None,
                      shared: SharedDecodes | None = None) -> tuple[int, int]:
    """Take the pixels once (draft, oriented), bound the long edge, write a plain
    JPEG atomically.

    The pixels come from a decode at ``decode_edge`` (default ``long_edge``): the
    one ``shared`` holds (default: the session open in this context, as when
    stage 5 decoded the photo already), else one made here.

    No EXIF is written: the orientation is already applied to the pixels, and the
    model needs nothing else from the file.
    """
    image = open_derived(source, long_edge, decode_edge or long_edge, shared)
    save_model_image(image, target, quality)
    return image.size


def save_model_image(image: Image.Image, target: Path, quality: int) -> None:
    """The one encoding of a model-ready image (here and at stage 2, :func:`tasks.intake.make_ahead`)."""
    write(image, target, "jpeg", quality=quality, optimize=False)


def _changed_since_intake(row: Photo) -> str | None:
    """Why the incoming copy is not the content the row's sha256 names, if it is not."""
    if row.file_size is None or row.file_mtime_ns is None:
        return None  # a row from before stamps were recorded: nothing to check against
    recorded = FileStamp(row.file_size, row.file_mtime_ns)
    try:
        now = FileStamp.of(Path(row.incoming_path or ""))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if now == recorded:
        return None
    return (f"content changed since intake ({now.describe()}; intake recorded "
            f"{recorded.describe()})")


def resize_rows(row_ids: list[int], image_set_id: int, settings: Settings | None = None,
                report: ChunkReport | None = None) -> ChunkReport:
    """Make (or reuse) the model-ready image of each row; store ``ollama_path``.

    Outcomes go to ``report`` when given (one report for several calls), else to a
    new one; it is returned.
    """
    settings = settings or get_settings()
    ledger = SessionLedger(settings, image_set_id)
    report = report if report is not None else ChunkReport(stage=STAGE)
    jobs: list[ResizeJob] = []
    with session_scope() as session:
        rows = session.scalars(select(Photo).where(Photo.id.in_(row_ids))).all()
        for row in sorted(rows, key=lambda r: r.id):
            if row.status in LOCKED_STATUSES:
                report.add(row.original_name, "skipped", f"row is {row.status}: left as it is")
                continue
            if not row.incoming_path or not Path(row.incoming_path).is_file():
                _fail(ledger, row, f"{row.original_name}: incoming copy missing "
                      f"({row.incoming_path or 'no path recorded'}); rerun intake")
                report.add(row.original_name, "failed", row.error or "")
                continue
            changed = _changed_since_intake(row)
            if changed is not None:  # a model image named for a sha256 it is not made from
                _fail(ledger, row, f"{row.incoming_path}: {changed}")
                report.add(row.original_name, "failed", row.error or "")
                continue
            target = model_image_path(settings, row.set_key, row.original_name, row.sha256)
            if target.is_file():
                # made by stage 2 of this session, from its one decode: new to the row
                made_ahead = row.ollama_path != str(target) and ledger.has_created(target)
                if row.ollama_path != str(target):
                    snapshot_row(ledger, row)
                    row.ollama_path = str(target)
                if made_ahead:
                    report.add(row.original_name, "ok", f"model-ready image {target.name} "
                               "(made at intake, from the photo's one decode)")
                else:
                    report.add(row.original_name, "skipped", "model-ready image already made")
                continue
            jobs.append(ResizeJob(row_id=row.id, file=row.original_name,
                                  source=row.incoming_path, target=str(target)))
    for job in jobs:  # recorded before anything is written: a crash mid-write is still undone
        ledger.record_created_file(Path(job.target))
    results = _run_jobs(jobs, settings)
    with session_scope() as session:
        for job in jobs:
            row = session.get(Photo, job.row_id)
            if row is None:
                continue
            fault = results[job.row_id]
            if fault is None:
                snapshot_row(ledger, row)
                row.ollama_path = job.target
                report.add(job.file, "ok", f"model-ready image {Path(job.target).name}")
            else:
                _fail(ledger, row, f"{job.file}: could not make the model-ready image: {fault}")
                report.add(job.file, "failed", row.error or fault)
    return report


def _run_jobs(jobs: list[ResizeJob], settings: Settings) -> dict[int, str | None]:
    long_edge, quality = settings.model_resize.long_edge, settings.model_resize.quality
    decode_edge = settings.shared_decode_edge  # as stage 5's: the same pixels, shared or not
    shared = current_shared()  # the worker threads do not see this context's session

    def run(job: ResizeJob) -> tuple[int, str | None]:
        try:
            write_model_image(Path(job.source), Path(job.target), long_edge, quality,
                              decode_edge, shared)
            return job.row_id, None
        except Exception as exc:  # one bad file never stops the chunk
            return job.row_id, f"{type(exc).__name__}: {exc}"

    if not jobs:
        return {}
    return dict(map_all(run, jobs, settings.threads))  # the process's pool, shared by chunks


def _fail(ledger: SessionLedger, row: Photo, message: str) -> None:
    snapshot_row(ledger, row)
    row.status = RowStatus.FAILED
    row.error = message
    row.error_category = STAGE


@task(name="model-resize-chunk", retries=1, retry_delay_seconds=2)
def model_resize_chunk(row_ids: list[int], image_set_id: int) -> ChunkReport:
    """Stage 6 for one chunk of rows (rerunnable: existing model-ready images are reused)."""
    return resize_rows(row_ids, image_set_id)
