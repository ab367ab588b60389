"""The fan-out of the throttled stages: one task run per chunk, then the results.

Tasks hold one chunk's work, and each chunk holds one slot of its stage's global
concurrency limit (``score-chunk`` and ``score-and-resize-chunk``: ``scoring``;
``publish-chunk``: ``publish``; see :mod:`galleryflow.core.prefect_run`). Here, once per stage start, the limit is
created if the server has none (``ensure_limit``, slots from the settings;
``galleryflow setup`` creates and corrects it too), then the chunks are submitted
and waited for. Used by ``process-sets`` and ``review-publish``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.tasks import Task

from galleryflow.core.prefect_run import ensure_limit
from galleryflow.core.progress import StageProgress
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.stages import ChunkReport, chunked
from galleryflow.publishing.summary import STAGE as PUBLISH_STAGE
from galleryflow.publishing.summary import PublishSummary
from tasks.publish import (
    PUBLISH_LIMIT,
    finish_publish,
    publish_chunk_task,
    publish_rows,
)
from tasks.score_and_resize import score_and_resize_chunk
from tasks.scoring import SCORING_LIMIT, score_chunk, scoring_chunks

C = TypeVar("C")
R = TypeVar("R")


def run_chunks(task: Task[..., R], chunks: Sequence[C], *args: Any) -> list[R]:
    """Submit one run of ``task(chunk, *args)`` per chunk; their results, in chunk order.

    The first failed chunk (in order) raises its error.
    """
    futures = [task.submit(chunk, *args) for chunk in chunks]
    return [future.result() for future in futures]


def run_chunks_settled(
    task: Task[..., R], chunks: Sequence[C], *args: Any,
    on_done: Callable[[C], None] | None = None,
) -> list[tuple[C, R | Exception]]:
    """Like :func:`run_chunks`, but a failed chunk gives its error instead of raising.

    ``on_done(chunk)`` is called as each chunk's outcome is collected, in order.
    """
    futures: list[tuple[C, PrefectFuture[R]]] = [
        (chunk, task.submit(chunk, *args)) for chunk in chunks
    ]
    settled: list[tuple[C, R | Exception]] = []
    for chunk, future in futures:
        try:
            outcome: R | Exception = future.result()
        except Exception as exc:
            outcome = exc
        settled.append((chunk, outcome))
        if on_done is not None:
            on_done(chunk)
    return settled


# -------------------------------------------------------------------- stages 5-6: scoring, model image


def score_rows(row_ids: Sequence[int], image_set_id: int, chunk_size: int | None = None
               ) -> list[ChunkReport]:
    """Inside a flow: one ``score-chunk`` run per chunk; the chunks' reports."""
    settings = get_settings()
    ensure_limit(SCORING_LIMIT, settings.scoring.concurrency)
    return run_chunks(score_chunk, scoring_chunks(row_ids, chunk_size), image_set_id)


def score_and_resize_rows(row_ids: Sequence[int], image_set_id: int,
                          chunk_size: int | None = None) -> list[ChunkReport]:
    """Inside a flow: stages 5 and 6 together, one ``score-and-resize-chunk`` run per
    chunk (one decode per photo for both); per chunk, scoring's report, then stage 6's."""
    settings = get_settings()
    ensure_limit(SCORING_LIMIT, settings.scoring.concurrency)
    return [report for reports in run_chunks(score_and_resize_chunk,
                                             scoring_chunks(row_ids, chunk_size), image_set_id)
            for report in reports]


# -------------------------------------------------------------------- stage 9: publish


def publish_approved(
    row_ids: Sequence[int], settings: Settings | None = None, flow_run_id: str | None = None
) -> PublishSummary:
    """Publish ``row_ids`` in chunks and write the summary artifact.

    Inside a flow the chunks run as ``publish-chunk`` task runs (each holding a
    slot of the global limit ``publish``, retried on network errors); outside one
    they run in this process, in turn. Work files are removed when no chunk ended
    with a blocking error. Raises :class:`~galleryflow.publishing.summary.PublishIncomplete`
    (after the artifact) when one did: those rows stay approved and a rerun
    resumes them.
    """
    settings = settings or get_settings()
    ids = list(dict.fromkeys(row_ids))
    chunks = list(chunked(ids, settings.chunk_size))
    progress = StageProgress(PUBLISH_STAGE, len(ids), key="publish-progress")
    settled: list[tuple[list[int], ChunkReport | Exception]] = []
    if FlowRunContext.get() is not None:
        ensure_limit(PUBLISH_LIMIT, settings.publish.concurrency)
        settled = run_chunks_settled(
            publish_chunk_task(settings), chunks, flow_run_id,
            on_done=lambda chunk: progress.advance(len(chunk)),
        )
    else:
        for chunk in chunks:
            try:
                settled.append(
                    (chunk, publish_rows(chunk, settings=settings, flow_run_id=flow_run_id)))
            except Exception as exc:
                settled.append((chunk, exc))
            progress.advance(len(chunk))
    reports = [o for _, o in settled if not isinstance(o, Exception)]
    blocking = [(chunk, f"{type(o).__name__}: {o}") for chunk, o in settled
                if isinstance(o, Exception)]
    return finish_publish(ids, reports, blocking, settings)
