"""Stages 5 and 6 for one chunk, on one decode per photo.

Scoring wants each photo at 512 px, the vision model at 1024 px; run one after
the other, the two stages decoded every photo twice. Here a chunk runs both,
batch by batch (``scoring.batch_size`` photos): each batch is scored inside a
shared-decode session (:mod:`galleryflow.imaging.shared`, opened by
:func:`tasks.scoring.score_rows_in_batches` at ``settings.shared_decode_edge``),
and its model-ready images are made before the session closes. Whichever needs
a photo's pixels first decodes it, once; the other derives its size from that
image:

- a first run: scoring's cached computation misses and decodes; the model image
  is written from the same pixels (one decode);
- a rerun: the scores come from the cache and the model image exists (no decode);
- a model image removed by a rollback or a cleanup is made again, from one decode.

Each stage keeps its own rules, row statuses and report: scoring's
(:mod:`tasks.scoring`) and the model image's (:mod:`tasks.model_resize`); this
module only sequences them. A chunk that runs a model holds one slot of the global
concurrency limit ``scoring``, as ``score-chunk`` does (``tasks.scoring.model_slot``);
``flows.fanout.score_and_resize_rows`` runs one per chunk.
"""

from __future__ import annotations

import time

from prefect import task

from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.stages import ChunkReport
from tasks import model_resize, scoring


def score_and_resize(row_ids: list[int], image_set_id: int,
                     settings: Settings | None = None) -> list[ChunkReport]:
    """Stages 5 and 6 for ``row_ids`` in this process: [scoring's report, stage 6's].

    Each report's ``seconds`` is the time spent on its stage (the decode counts
    for the stage that made it).
    """
    settings = settings or get_settings()
    scores = ChunkReport(stage=scoring.STAGE)
    images = ChunkReport(stage=model_resize.STAGE)
    batched: set[int] = set()

    def model_images(row_ids_of_batch: list[int]) -> None:
        start = time.perf_counter()
        model_resize.resize_rows(row_ids_of_batch, image_set_id, settings, report=images)
        images.seconds += time.perf_counter() - start
        batched.update(row_ids_of_batch)

    start = time.perf_counter()
    scoring.score_rows_in_batches(row_ids, image_set_id, settings, scores, after_batch=model_images)
    scores.seconds = max(0.0, time.perf_counter() - start - images.seconds)
    # Rows scoring did not take (locked, no incoming copy, changed since intake) get
    # stage 6's own verdict, which needs no pixels.
    rest = [row_id for row_id in row_ids if row_id not in batched]
    if rest:
        start = time.perf_counter()
        model_resize.resize_rows(rest, image_set_id, settings, report=images)
        images.seconds += time.perf_counter() - start
    return [scores, images]


@task(name="score-and-resize-chunk", retries=2, retry_delay_seconds=5)
def score_and_resize_chunk(row_ids: list[int], image_set_id: int) -> list[ChunkReport]:
    """Stages 5 and 6 for one chunk of rows, on one decode per photo; rerunnable
    (cached scores, existing model-ready images reused)."""
    settings = get_settings()
    with scoring.model_slot(settings):
        return score_and_resize(row_ids, image_set_id, settings)
