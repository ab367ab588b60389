"""Stage 5: quality scores for every image, each with its source.

Per image, from ONE reduced copy (EXIF orientation applied, long edge
``scoring.analysis_long_edge``), derived from the decode stages 5 and 6 share
(``settings.shared_decode_edge``, :mod:`galleryflow.imaging.shared`):

- ``brisque_score``: pyiqa's BRISQUE (lower is better), or the fallback;
- ``clip_aesthetic_score``: open_clip image embedding → LAION aesthetic MLP
  (about 1–10), in batches of ``scoring.batch_size``, or the fallback;
- ``blur_score`` (Laplacian variance, higher is sharper), ``brightness_score``
  (0–1), ``contrast_score`` (RMS, 0–0.5) and the pHash: see :mod:`galleryflow.imaging.stats`.

Each model score's source is ``"<library> <model> sha256:…"`` or
``"fallback: <reason>"``. The fallback formula (documented in
:mod:`galleryflow.imaging.stats` and ``docs/scoring.md``) fills the same ranges and gives
the same values on every run. A file that cannot be scored by a model (CMYK,
16-bit, palette, too small, or the model failed on it) gets the fallback with the
reason; one that cannot be decoded now gets the worst fallback values; neither
stops the set. The incoming copy is not hashed again: the row's sha256 is trusted
while the file carries the stamp intake recorded (:func:`verify_content`).

Tasks, as in ``docs/CONVENTIONS.md``: :func:`compute_scores` is pure (a plain call,
not a task run per batch: see its docstring); its results are cached per photo on the file's sha256 and the model identity (weights
fingerprints), so a rerun computes nothing however its rows are batched;
:func:`score_chunk` reads ``review_queue`` rows, calls it per CLIP batch, writes
the rows and moves ``new`` → ``scored``, holding one slot of the global
concurrency limit ``scoring``; ``flows.fanout.score_rows`` runs one per chunk.
``process-sets`` runs this stage together with stage 6, on one decode per photo
(:mod:`tasks.score_and_resize`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field
from sqlalchemy import select

from galleryflow.core.caching import PhotoCache
from galleryflow.core.fsutil import FileStamp, sha256_file
from galleryflow.db import Photo, session_scope
from galleryflow.imaging.shared import SharedDecodes, open_derived, sharing_decodes
from galleryflow.imaging.shared import current as current_shared
from galleryflow.core.ledger import SessionLedger
from galleryflow.core.prefect_run import flow_run_id, limit_slot, run_logger
from galleryflow.core.progress import StageProgress
from galleryflow.imaging.stats import (
    WORST_AESTHETIC,
    WORST_BRISQUE,
    ImageStats,
    fallback_aesthetic,
    fallback_brisque,
    image_stats,
    phash,
)
from galleryflow.scoring.setup import (
    ScoringDescription,
    ScoringIdentity,
    ScoringSetup,
    clip_source,
    describe_setup,
    fallback_source,
    resolve_setup,
)
from galleryflow.captioning.keywords import hint_vocabulary
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import LOCKED_STATUSES, RowStatus
from tasks.rowstate import snapshot_row
from galleryflow.core.stages import ChunkReport, chunked
from galleryflow.core.workers import map_all

STAGE = "scoring"
SCORING_LIMIT = "scoring"  # the global concurrency limit a chunk holds one slot of
_log = logging.getLogger(__name__)

# Columns this stage writes (and snapshots before refreshing a row it did not create).
SCORE_COLUMNS = (
    "brisque_score", "brisque_source", "clip_aesthetic_score", "clip_aesthetic_source",
    "blur_score", "brightness_score", "contrast_score", "stats_source", "phash", "visual_hints",
)
# Statuses a rescore leaves as they are (the row is already past this stage).
_KEEP_STATUS = frozenset({RowStatus.SCORED, RowStatus.CAPTIONED, RowStatus.AWAITING_REVIEW})


class ScoreInput(BaseModel):
    """One image to score: its content hash (the cache key) and where to read it.

    ``stamp`` is the file's size and mtime as intake recorded them: when present,
    ``sha256`` is trusted and the file only has to still carry that stamp; without
    it (a file scored outside the pipeline, a row from before stamps were
    recorded) the file is hashed and compared. Not part of the cache key.
    """

    sha256: str
    path: Path
    stamp: FileStamp | None = None


class ImageScores(BaseModel):
    """The scores of one image, each with its source, plus per-image reasons."""

    sha256: str
    brisque_score: float | None
    brisque_source: str
    clip_aesthetic_score: float | None
    clip_aesthetic_source: str
    blur_score: float | None
    brightness_score: float | None
    contrast_score: float | None
    stats_source: str
    phash: str | None
    # Classifier-assisted keyword hints from the same CLIP embedding (stage 7's evidence):
    # {"source": model, "labels": [[label, similarity], …]}; None without a CLIP model.
    visual_hints: dict[str, Any] | None = None
    reasons: list[str] = Field(
        default_factory=list,
        description="Why this image (not the whole setup) took a fallback, in plain words.",
    )

    def row_values(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in SCORE_COLUMNS}


class ScoringInputError(OSError):
    """The file to score cannot be read (possibly transient: the task retries)."""


class ContentChanged(ValueError):
    """The file is not the content intake recorded: scoring it would poison the cache."""


# --- setup, once per process ----------------------------------------------------------

_log_lock = threading.Lock()
_logged: set[str] = set()


def scoring_setup(settings: Settings | None = None) -> ScoringSetup:
    """The resolved setup for these settings.

    Resolved afresh on each call (cheap: file lookups; the sha256 of each weight
    file is memoised by path, size and mtime), so a long-running worker notices
    weights that were added or replaced.
    """
    settings = settings or get_settings()
    setup = resolve_setup(settings.scoring, settings.shared_decode_edge)
    cfg = settings.captioning
    setup.identity = setup.identity.model_copy(update={
        "hint_labels": tuple(hint_vocabulary(cfg.hint_vocabulary)),
        "hint_top_k": cfg.hint_top_k, "hint_min_score": cfg.hint_min_score})
    return setup


def describe_scoring(settings: Settings | None = None) -> ScoringDescription:
    """What stage 5 will use, for the flow and the CLI to show (``.lines()``)."""
    return describe_setup(scoring_setup(settings))


def _log_once(key: str, message: str, level: int = logging.INFO) -> None:
    """Log a message once per process and flow run (the run log says it once)."""
    full = f"{flow_run_id() or 'no-run'}:{key}"
    with _log_lock:
        if full in _logged:
            return
        _logged.add(full)
    run_logger(_log).log(level, message)


def log_scoring_setup(setup: ScoringSetup | None = None) -> ScoringDescription:
    """Log which path each score takes (once per run per process); return the description."""
    description = describe_setup(setup or scoring_setup())
    _log_once("setup", "scoring setup:\n" + "\n".join(description.lines()))
    return description


# --- one image: decode once, statistics, model inputs -------------------------------------

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def odd_image_reason(img: Image.Image, min_side: int) -> str | None:
    """Why the models (trained on 8-bit RGB photographs) should not score this image."""
    rawmode = ""
    if img.tile:
        args = img.tile[0].args
        rawmode = args if isinstance(args, str) else str(args[0]) if args else ""
    if img.mode == "CMYK":
        return "CMYK image: its colours were converted without a profile"
    if img.mode in _SIXTEEN_BIT or ";16" in rawmode:
        return f"16-bit image ({img.format} {img.mode}): reduced to 8 bits"
    if img.mode in ("P", "PA"):
        return "palette image: its quantised colours defeat natural-image statistics"
    if img.mode == "1":
        return "bilevel (1-bit) image: no tones for the models to judge"
    if min(img.size) < min_side:
        return f"too small ({img.width}×{img.height}; under {min_side} px)"
    return None


@dataclass
class Prepared:
    """One image after its single decode (internal to a batch)."""

    item: ScoreInput
    image: Image.Image | None = None
    stats: ImageStats | None = None
    phash: str | None = None
    odd: str | None = None
    undecodable: str | None = None
    clip_input: Any = None
    reasons: list[str] = field(default_factory=list)


def content_changed(item: ScoreInput, now: FileStamp) -> ContentChanged | None:
    """The error to raise when ``item``'s file no longer carries its recorded stamp."""
    if item.stamp is None or item.stamp == now:
        return None
    return ContentChanged(f"{item.path}: content changed since intake ({now.describe()}; "
                          f"intake recorded {item.stamp.describe()})")


def verify_content(item: ScoreInput) -> None:
    """Raise unless ``item.path`` is readable and still the content ``item.sha256`` names.

    With a recorded stamp the check is one open and ``fstat``: the row's sha256,
    computed while intake copied the file, is trusted and nothing is hashed.
    Without one the file is hashed (counted in ``HASHES``) and compared. Raises
    :class:`ScoringInputError` when the file cannot be read and
    :class:`ContentChanged` when it is not the recorded content (scoring it under
    the recorded hash would poison the content cache).
    """
    try:
        if item.stamp is not None:
            fd = os.open(item.path, os.O_RDONLY)
            try:
                now = FileStamp.of(fd)
            finally:
                os.close(fd)
            changed = content_changed(item, now)
            if changed is not None:
                raise changed
            return
        actual = sha256_file(item.path)
    except OSError as exc:
        raise ScoringInputError(f"{item.path}: cannot be read: {exc.strerror or exc}") from exc
    if actual != item.sha256:
        raise ContentChanged(
            f"{item.path}: content changed since intake (sha256 {actual[:12]}…, "
            f"expected {item.sha256[:12]}…)"
        )


def prepare(item: ScoreInput, long_edge: int, min_side: int, clip_prepare: Any = None,
            decode_edge: int | None = None, shared: SharedDecodes | None = None) -> Prepared:
    """Check one image, take its pixels once; derive stats, pHash and the CLIP input.

    The analysed copy (long edge ``long_edge``) is derived from a decode at
    ``decode_edge`` (default ``long_edge``): the one ``shared`` holds (default: the
    session open in this context, :mod:`galleryflow.imaging.shared`), else a
    decode made here the same way.

    Raises :class:`ScoringInputError` when the file cannot be read and
    :class:`ContentChanged` when it is not the recorded content
    (:func:`verify_content`); a file that reads but does not decode is recorded as
    undecodable instead.
    """
    verify_content(item)
    prepared = Prepared(item=item)
    try:
        with Image.open(item.path) as probe:  # header only: no pixels decoded yet
            prepared.odd = odd_image_reason(probe, min_side)
        image = open_derived(item.path, long_edge, decode_edge or long_edge, shared)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as exc:
        prepared.undecodable = f"cannot decode: {exc}"
        return prepared
    prepared.image = image
    prepared.stats = image_stats(image)
    prepared.phash = phash(image)
    if prepared.odd is None and clip_prepare is not None:
        prepared.clip_input = clip_prepare(image)
    return prepared


# --- the models (torch only imported when the setup has a model to run) ---------------------

def _models(setup: ScoringSetup) -> tuple[Any, str | None, Any, str | None]:
    """(aesthetic model, reason it is absent, brisque model, reason it is absent)."""
    aesthetic = brisque = None
    aesthetic_reason = None if setup.aesthetic_available else setup.identity.aesthetic
    brisque_reason = None if setup.brisque_available else setup.identity.brisque
    if setup.aesthetic_available or setup.brisque_available:
        from galleryflow.scoring import models as sm

        if setup.aesthetic_available:
            try:
                aesthetic = sm.aesthetic_model(setup)
            except sm.ModelLoadError as exc:
                aesthetic_reason = fallback_source(str(exc))
                _log_once("aesthetic-load", f"CLIP aesthetic model not loaded: {exc}",
                          logging.WARNING)
        if setup.brisque_available:
            try:
                brisque = sm.brisque_model(setup)
            except sm.ModelLoadError as exc:
                brisque_reason = fallback_source(str(exc))
                _log_once("brisque-load", f"BRISQUE not loaded: {exc}", logging.WARNING)
    return aesthetic, aesthetic_reason, brisque, brisque_reason


Rated = tuple[float, list[tuple[str, float]] | None]


def _run_aesthetic(model: Any, batch: list[Prepared], ident: ScoringIdentity
                   ) -> dict[int, Rated | str]:
    """(score, hints) by position in ``batch`` from one embedding per image; a failed
    batch is retried image by image."""
    todo = [i for i, p in enumerate(batch) if p.clip_input is not None]
    results: dict[int, Rated | str] = {}
    if not todo:
        return results

    def rated(indices: list[int]) -> list[Rated]:
        embedding = model.embed([batch[i].clip_input for i in indices])
        hints = model.hints(embedding, ident.hint_labels, ident.hint_top_k, ident.hint_min_score)
        scores = model.rate(embedding)
        return [(s, hints[n] if hints is not None else None) for n, s in enumerate(scores)]

    try:
        for i, value in zip(todo, rated(todo), strict=True):
            results[i] = value
        return results
    except Exception as exc:  # isolate the image that breaks the batch
        _log.warning("CLIP batch failed (%s); retrying image by image", exc)
    for i in todo:
        try:
            results[i] = rated([i])[0]
        except Exception as exc:
            results[i] = f"open_clip failed on this image: {exc}"
    return results


def _rounded(value: float) -> float:
    return round(value, 4)


def _assemble(p: Prepared, ident: ScoringIdentity, aesthetic: Rated | str | None,
              aesthetic_reason: str | None, brisque_model: Any, brisque_reason: str | None
              ) -> ImageScores:
    if p.undecodable or p.stats is None:
        reason = p.undecodable or "no image"
        return ImageScores(
            sha256=p.item.sha256,
            brisque_score=WORST_BRISQUE, brisque_source=fallback_source(reason),
            clip_aesthetic_score=WORST_AESTHETIC, clip_aesthetic_source=fallback_source(reason),
            blur_score=None, brightness_score=None, contrast_score=None,
            stats_source=clip_source(f"unavailable: {reason}"), phash=None, reasons=[reason],
        )
    reasons = [p.odd] if p.odd else []

    # BRISQUE: the model unless absent, the image is odd, or it fails on this image.
    if brisque_reason:
        b_score, b_source = fallback_brisque(p.stats), brisque_reason
    elif p.odd:
        b_score, b_source = fallback_brisque(p.stats), fallback_source(p.odd)
    else:
        try:
            b_score, b_source = _rounded(brisque_model.score(p.image)), ident.brisque
        except Exception as exc:
            why = f"BRISQUE failed on this image: {exc}"
            reasons.append(why)
            b_score, b_source = fallback_brisque(p.stats), fallback_source(why)

    hints = None
    if aesthetic_reason:
        a_score, a_source = fallback_aesthetic(p.stats), aesthetic_reason
    elif p.odd:
        a_score, a_source = fallback_aesthetic(p.stats), fallback_source(p.odd)
    elif isinstance(aesthetic, tuple):
        a_score, a_source = _rounded(aesthetic[0]), ident.aesthetic
        if aesthetic[1] is not None:
            hints = {"source": ident.aesthetic, "labels": [list(h) for h in aesthetic[1]]}
    else:
        why = str(aesthetic or "no CLIP input")
        reasons.append(why)
        a_score, a_source = fallback_aesthetic(p.stats), fallback_source(why)

    return ImageScores(
        sha256=p.item.sha256,
        brisque_score=b_score, brisque_source=b_source,
        clip_aesthetic_score=a_score, clip_aesthetic_source=a_source,
        blur_score=p.stats.blur, brightness_score=p.stats.brightness,
        contrast_score=p.stats.contrast, stats_source=ident.stats_source,
        phash=p.phash, visual_hints=hints, reasons=reasons,
    )


def score_images(items: Sequence[ScoreInput], setup: ScoringSetup,
                 threads: int = 4) -> list[ImageScores]:
    """Score images with the setup's models: decode in threads, CLIP in batches.

    Returns one :class:`ImageScores` per item, in order. Raises
    :class:`ScoringInputError` if a file cannot be read, :class:`ContentChanged` if
    it is not its recorded content.
    """
    if not items:
        return []
    ident = setup.identity
    aesthetic, aesthetic_reason, brisque, brisque_reason = _models(setup)
    clip_prepare = aesthetic.prepare if aesthetic is not None else None
    shared = current_shared()  # the worker threads do not see this context's session

    def _prep(item: ScoreInput) -> Prepared:
        return prepare(item, ident.analysis_long_edge, ident.min_side, clip_prepare,
                       ident.decode_long_edge, shared)

    # Pillow releases the GIL while decoding; the process's pool, shared by chunks.
    prepared = map_all(_prep, items, threads)

    aesthetic_scores: dict[int, Rated | str] = {}
    if aesthetic is not None:
        for start in range(0, len(prepared), setup.batch_size):
            batch = prepared[start : start + setup.batch_size]
            for i, value in _run_aesthetic(aesthetic, batch, ident).items():
                aesthetic_scores[start + i] = value

    return [
        _assemble(p, ident, aesthetic_scores.get(i), aesthetic_reason, brisque, brisque_reason)
        for i, p in enumerate(prepared)
    ]


def score_image(path: Path, settings: Settings | None = None) -> ImageScores:
    """Score one file outside any flow (CLI, notebooks): sha256 computed here."""
    settings = settings or get_settings()
    item = ScoreInput(sha256=sha256_file(path), path=path, stamp=FileStamp.of(path))
    return score_images([item], scoring_setup(settings), settings.threads)[0]


# --- Prefect tasks -----------------------------------------------------------------------------

# Read errors can be transient (a network share, a busy disk): tried again after these
# pauses; a file whose content changed is not (ContentChanged: rescoring cannot help).
READ_RETRY_SECONDS = (1.0, 4.0)


def compute_scores(items: list[ScoreInput], identity: ScoringIdentity) -> list[ImageScores]:
    """Scores for one CLIP batch of photos the cache does not hold.

    A plain call inside the chunk's task run, not a task run of its own: a task run
    per batch cost ~0.1 s of orchestration (its states, events, an API client) for
    every 16 photos, more than scoring small photos does, and the chunk's task run
    already shows the stage in the UI and retries it. Read errors are tried again
    here (:data:`READ_RETRY_SECONDS`), as the task's retries did.

    Not cached as a whole: the cache is per photo (:func:`_scores`, a
    :class:`~galleryflow.core.caching.PhotoCache` keyed on each file's sha256 and
    ``identity``: model names, weight fingerprints and code versions, never paths),
    so new weights recompute, and a rerun computes nothing however its rows are
    batched.
    """
    settings = get_settings()
    setup = scoring_setup(settings)
    if setup.identity != identity:
        # Weights changed between the chunk's planning and now: caching these
        # results under the old identity would be wrong.
        raise RuntimeError("scoring weights changed during the run; rerun the stage")
    for pause in (*READ_RETRY_SECONDS, None):
        try:
            return score_images(items, setup, settings.threads)
        except ContentChanged:
            raise
        except ScoringInputError as exc:
            if pause is None:
                raise
            _log.warning("scoring: %s; trying again in %.0f s", exc, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


@dataclass
class _Work:
    row_id: int
    name: str
    item: ScoreInput


def _load_rows(row_ids: list[int], image_set_id: int, report: ChunkReport,
               ledger: SessionLedger) -> list[_Work]:
    """Rows to score; locked rows are skipped, rows without a file or whose file no
    longer carries the stamp intake recorded fail."""
    work: list[_Work] = []
    with session_scope() as session:
        rows = session.scalars(select(Photo).where(Photo.id.in_(row_ids))
                               .order_by(Photo.id)).all()
        found = {row.id for row in rows}
        for missing in sorted(set(row_ids) - found):
            report.add(f"row {missing}", "skipped", "row no longer exists")
        for row in rows:
            if row.status in LOCKED_STATUSES:
                report.add(row.original_name, "skipped", f"{row.status}: scores left as they are")
                continue
            path = Path(row.incoming_path) if row.incoming_path else None
            if path is None or not path.is_file():
                message = (f"{row.original_name}: no incoming copy to score "
                           f"({row.incoming_path or 'intake recorded no path'})")
                snapshot_row(ledger, row)
                row.status = RowStatus.FAILED
                row.error, row.error_category = message, STAGE
                report.add(row.original_name, "failed", message)
                continue
            item = ScoreInput(sha256=row.sha256, path=path, stamp=recorded_stamp(row))
            try:
                changed: Exception | None = content_changed(item, FileStamp.of(path))
            except OSError as exc:
                changed = ScoringInputError(f"{path}: cannot be read: {exc.strerror or exc}")
            if changed is not None:  # checked here too: a cache hit reads no file
                snapshot_row(ledger, row)
                row.status = RowStatus.FAILED
                row.error, row.error_category = str(changed), STAGE
                report.add(row.original_name, "failed", str(changed))
                continue
            work.append(_Work(row.id, row.original_name, item))
    return work


def recorded_stamp(row: Photo) -> FileStamp | None:
    """The incoming copy's stamp as intake recorded it (None for rows from before)."""
    if row.file_size is None or row.file_mtime_ns is None:
        return None
    return FileStamp(row.file_size, row.file_mtime_ns)


def _compute_isolated(batch: list[_Work], identity: ScoringIdentity
                      ) -> list[ImageScores | Exception]:
    """Score a batch; if it fails (a file unreadable or changed), find which file."""
    try:
        return list(compute_scores([w.item for w in batch], identity))
    except Exception as exc:
        if len(batch) == 1:
            return [exc]
        _log.warning("scoring batch failed (%s); scoring its files one by one", exc)
    out: list[ImageScores | Exception] = []
    for work in batch:
        try:
            out.extend(compute_scores([work.item], identity))
        except Exception as exc:
            out.append(exc)
    return out


def _scores(batch: list[_Work], identity: ScoringIdentity, cache: PhotoCache
            ) -> list[ImageScores | Exception]:
    """The batch's scores: each photo's from the cache, the misses computed together
    and stored one by one."""
    cached = cache.get_many(w.item.sha256 for w in batch)
    misses = [w for w in batch if w.item.sha256 not in cached]
    computed: dict[int, ImageScores | Exception] = {}
    if misses:
        for work, result in zip(misses, _compute_isolated(misses, identity), strict=True):
            computed[work.row_id] = result
            if not isinstance(result, Exception):
                cache.put(work.item.sha256, result)
    if cached:
        _log.info("scores of %d photo(s) from the cache, %d computed", len(batch) - len(misses),
                  len(misses))
    return [computed[w.row_id] if w.row_id in computed else cached[w.item.sha256] for w in batch]


def _write(batch: list[_Work], results: list[ImageScores | Exception], image_set_id: int,
           report: ChunkReport, ledger: SessionLedger) -> None:
    with session_scope() as session:
        rows = {row.id: row for row in session.scalars(
            select(Photo).where(Photo.id.in_([w.row_id for w in batch])))}
        for work, result in zip(batch, results, strict=True):
            row = rows.get(work.row_id)
            if row is None or row.status in LOCKED_STATUSES:  # changed while we scored
                report.add(work.name, "skipped", "row was decided or removed while scoring")
                continue
            snapshot_row(ledger, row)
            if isinstance(result, Exception):
                row.status = RowStatus.FAILED
                row.error, row.error_category = str(result), STAGE
                report.add(work.name, "failed", str(result))
                continue
            for column, value in result.row_values().items():
                setattr(row, column, value)
            if row.status not in _KEEP_STATUS:
                row.status = RowStatus.SCORED
            if row.error_category == STAGE:
                row.error = row.error_category = None
            summary = (f"BRISQUE {result.brisque_score}, aesthetic {result.clip_aesthetic_score}, "
                       f"blur {result.blur_score}")
            if result.reasons:
                report.add(work.name, "warning", f"{summary}; fallback: {'; '.join(result.reasons)}")
            else:
                report.add(work.name, "ok", summary)


def score_rows_in_batches(row_ids: list[int], image_set_id: int, settings: Settings,
                          report: ChunkReport,
                          after_batch: Callable[[list[int]], None] | None = None) -> None:
    """Stage 5 for ``row_ids`` in this process (the body of :func:`score_chunk`).

    Rows are scored ``scoring.batch_size`` at a time: the photos the per-photo cache
    lacks go to one :func:`compute_scores` call per batch, then the batch's rows are
    written. Each batch runs inside
    :func:`~galleryflow.imaging.shared.sharing_decodes` at the shared decode edge,
    and ``after_batch(row_ids)`` (when given) runs while the batch's decodes are
    still held: stage 6 makes the model-ready images from the pixels scoring
    decoded (:mod:`tasks.score_and_resize`).
    """
    setup = scoring_setup(settings)
    log_scoring_setup(setup)
    ledger = SessionLedger(settings, image_set_id)
    work = _load_rows(row_ids, image_set_id, report, ledger)
    cache = PhotoCache("scores", setup.identity)
    progress = StageProgress(STAGE, total=len(row_ids), key=f"scoring-session-{image_set_id}")
    progress.advance(len(row_ids) - len(work))
    for batch in chunked(work, setup.batch_size):
        # stage 2's scoring inputs, made from its one decode, are taken from the store
        with sharing_decodes(setup.identity.decode_long_edge, store=ledger.scratch):
            results = _scores(batch, setup.identity, cache)
            _write(batch, results, image_set_id, report, ledger)
            if after_batch is not None:
                after_batch([w.row_id for w in batch])
        progress.advance(len(batch))


def uses_a_model(setup: ScoringSetup) -> bool:
    """Whether a score of this setup comes from a model (BRISQUE or CLIP), not the fallback."""
    return setup.brisque_available or setup.aesthetic_available


def model_slot(settings: Settings) -> AbstractContextManager[None]:
    """One slot of the global limit ``scoring`` for a chunk whose scores come from a
    model: the limit keeps one model in memory per slot (docs/operations.md). A chunk
    whose every score takes the fallback (no weights, or no ``ai`` extra: statistics of
    the 512-px copy, nothing loaded) asks the server for none (its acquire and release
    were two round trips per chunk) but still waits its turn in this process: a set's
    chunks share one pool of threads and one SQLite writer, and four of them at once
    took 3.07 s where one after another took 2.85 (500 small photos)."""
    return limit_slot(SCORING_LIMIT, settings.scoring.slot_wait_seconds,
                      server=uses_a_model(scoring_setup(settings)))


@task(name="score-chunk", retries=2, retry_delay_seconds=5)
def score_chunk(row_ids: list[int], image_set_id: int) -> ChunkReport:
    """Score the ``review_queue`` rows ``row_ids`` (one chunk) and write their scores.

    ``new``/``failed`` rows become ``scored``; rows already past scoring keep their
    status and get fresh scores; approved, rejected and published rows are left
    alone. A chunk that runs a model holds one slot of the global concurrency limit
    ``scoring`` (default 1 slot, waiting at most ``scoring.slot_wait_seconds``), so two
    runs never fight over one GPU (:func:`model_slot`). ``flows.fanout.score_rows``
    submits the chunks.
    """
    settings = get_settings()
    with model_slot(settings):
        report = ChunkReport(stage=STAGE)
        score_rows_in_batches(row_ids, image_set_id, settings, report)
        return report


def scoring_chunks(row_ids: Sequence[int], chunk_size: int | None = None) -> list[list[int]]:
    """The chunks :func:`score_chunk` runs on: ``chunk_size`` rows (default
    ``settings.chunk_size``) each, in order."""
    return list(chunked(list(row_ids), chunk_size or get_settings().chunk_size))
