"""The global concurrency limits ``scoring`` and ``publish`` really throttle.

Two chunks of real rows (tiny JPEGs) run through the real fan-out
(``flows.fanout.score_rows`` / ``publish_approved``) and the real chunk tasks, in
a flow whose thread pool has room for both at once. Each chunk's work — from
reading its rows to writing them back, all inside the slot the chunk holds — is
recorded as it starts and ends:

- with a limit of 1 slot the two never overlap (each stays inside a moment, so
  an unthrottled second chunk would come in meanwhile);
- with 2 slots both are inside at once (they meet at a barrier that only opens
  with both inside), so it is the limit that serialises them, not the pool.

Each test sets the limit itself and deletes it afterwards (the harness serves the
whole session).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from galleryflow.core.settings import Settings, get_settings, reset_settings
from galleryflow.core.stages import ChunkReport
from galleryflow.publishing.config import resolve_gallery
from tests.fixtures.photos import make_set
from tests.fixtures.rows import RowSpec, by_id, by_name, drafted, insert_set, load_photos
from tests.fixtures.weights import isolate_weight_caches

pytestmark = pytest.mark.integration


class Spans:
    """When each chunk was inside its slot-held work, and how many were inside at most."""

    def __init__(self, meet: int) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._entries = 0
        self._meet = meet
        self.most = 0
        self.spans: list[tuple[float, float]] = []
        # meet > 1: the first chunks wait inside until that many are in (proof they overlap)
        self._barrier = threading.Barrier(meet) if meet > 1 else None

    def enter(self) -> float:
        start = time.monotonic()
        with self._lock:
            self._inside += 1
            self._entries += 1
            first = self._entries <= self._meet  # not a retry's second entry
            self.most = max(self.most, self._inside)
        if self._barrier is None:
            time.sleep(1.0)  # room for another chunk to come in, if the limit let it
        elif first:
            self._barrier.wait(timeout=60)  # BrokenBarrierError: they were never in together
        return start

    def leave(self, start: float) -> None:
        with self._lock:
            self._inside -= 1
            self.spans.append((start, time.monotonic()))

    def overlapping(self) -> bool:
        (_, first_end), (second_start, _) = sorted(self.spans)
        return second_start < first_end


def record_between(monkeypatch: pytest.MonkeyPatch, module: Any, first: str, last: str,
                   spans: Spans) -> None:
    """Record a span from the start of ``module.first`` to the end of ``module.last``
    (the first and the last step of a chunk's work, both inside its slot)."""
    real_first, real_last = getattr(module, first), getattr(module, last)
    starts: dict[int, float] = {}

    def first_step(*args: Any, **kwargs: Any) -> Any:
        starts[threading.get_ident()] = spans.enter()
        return real_first(*args, **kwargs)

    def last_step(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_last(*args, **kwargs)
        finally:
            spans.leave(starts.pop(threading.get_ident()))

    monkeypatch.setattr(module, first, first_step)
    monkeypatch.setattr(module, last, last_step)


@pytest.fixture
def set_limit(prefect_api) -> Iterator[Callable[[str, int], None]]:
    """Set a global concurrency limit to ``slots`` for this test; deleted afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    names: set[str] = set()

    def delete(client: Any, name: str) -> None:
        try:
            client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            pass

    def set_(name: str, slots: int) -> None:
        with get_client(sync_client=True) as client:
            delete(client, name)  # one an earlier stage created, with its own slots
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots))
            names.add(name)

    yield set_
    with get_client(sync_client=True) as client:
        for name in names:
            delete(client, name)


@pytest.fixture
def bounded(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Slot waits inside pytest's timeout, and one row per chunk."""
    monkeypatch.setenv("GALLERYFLOW_SCORING__SLOT_WAIT_SECONDS", "90")
    monkeypatch.setenv("GALLERYFLOW_PUBLISH__SLOT_WAIT_SECONDS", "90")
    monkeypatch.setenv("GALLERYFLOW_CHUNK_SIZE", "1")
    reset_settings()
    return get_settings()


# --------------------------------------------------------------------------- scoring


@flow(name="scoring-limit-under-test", task_runner=ThreadPoolTaskRunner(max_workers=4))
def scoring_flow(row_ids: list[int], image_set_id: int) -> list[ChunkReport]:
    from flows.fanout import score_rows

    return score_rows(row_ids, image_set_id, chunk_size=1)


def _score_two_chunks(slots: int, set_limit, bounded: Settings, db, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> Spans:
    from tasks import scoring

    isolate_weight_caches(monkeypatch, tmp_path)  # fallback scores: no model to load
    # ... but the chunks take the slot as a model's would (the throttling under test).
    monkeypatch.setattr(scoring, "uses_a_model", lambda setup: True)
    files = sorted(make_set(tmp_path / "sets", f"limit-{slots}", 2, size=(160, 120)).glob("*.jpg"))
    inserted = insert_set(get_settings(), files=files, status="new", exif=False)
    image_set_id, row_ids = inserted.image_set_id, inserted.row_ids
    set_limit("scoring", slots)
    spans = Spans(meet=slots)
    record_between(monkeypatch, scoring, "_load_rows", "_write", spans)

    reports = scoring_flow(row_ids, image_set_id)

    assert sorted(o.outcome for r in reports for o in r.outcomes) == ["ok", "ok"]
    assert {r.status for r in by_name(load_photos(row_ids)).values()} == {"scored"}
    assert len(spans.spans) == 2
    return spans


def test_scoring_chunks_never_overlap_with_one_slot(set_limit, bounded, db, tmp_path,
                                                    monkeypatch):
    spans = _score_two_chunks(1, set_limit, bounded, db, tmp_path, monkeypatch)
    assert spans.most == 1
    assert not spans.overlapping()


def test_scoring_chunks_overlap_with_two_slots(set_limit, bounded, db, tmp_path, monkeypatch):
    spans = _score_two_chunks(2, set_limit, bounded, db, tmp_path, monkeypatch)
    assert spans.most == 2
    assert spans.overlapping()


def test_fallback_scoring_takes_no_slot_of_the_model_limit(set_limit, db, tmp_path,
                                                           monkeypatch):
    """The limit keeps models in memory apart; fallback scores load none, so a chunk of
    them does not wait for a slot another run holds (nor asks the server for one)."""
    from prefect.concurrency.sync import concurrency

    monkeypatch.setenv("GALLERYFLOW_SCORING__SLOT_WAIT_SECONDS", "3")
    monkeypatch.setenv("GALLERYFLOW_CHUNK_SIZE", "1")
    reset_settings()
    isolate_weight_caches(monkeypatch, tmp_path)
    files = sorted(make_set(tmp_path / "sets", "fallback-only", 2, size=(160, 120)).glob("*.jpg"))
    inserted = insert_set(get_settings(), files=files, status="new", exif=False)
    set_limit("scoring", 1)
    held, done = threading.Event(), threading.Event()

    def another_run() -> None:  # its slot at the server (another process's chunk)
        with concurrency("scoring", occupy=1, timeout_seconds=30):
            held.set()
            done.wait(60)

    holder = threading.Thread(target=another_run)
    holder.start()
    try:
        assert held.wait(30)
        reports = scoring_flow(inserted.row_ids, inserted.image_set_id)
    finally:
        done.set()
        holder.join()
    assert sorted(o.outcome for r in reports for o in r.outcomes) == ["ok", "ok"]
    assert {r.status for r in by_name(load_photos(inserted.row_ids)).values()} == {"scored"}


# --------------------------------------------------------------------------- publish


@flow(name="publish-limit-under-test", task_runner=ThreadPoolTaskRunner(max_workers=4))
def publish_flow(row_ids: list[int]) -> list[str]:
    from flows.fanout import publish_approved

    return publish_approved(row_ids).published


def _publish_two_chunks(slots: int, set_limit, bounded: Settings, db, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> Spans:
    from tasks import publish

    ids = insert_set(bounded, tmp_path / "sets", "lake-shore", size=(320, 240),
                     per_row=drafted([RowSpec(), RowSpec()])).row_ids
    # The gallery table exists before the chunks start: two chunks creating it at once
    # race in GalleryConnection.ensure_table (check, then CREATE TABLE), and the loser's
    # retry (GalleryUnavailable) would blur what this test looks at.
    with resolve_gallery(bounded).connect() as gallery:
        gallery.ensure_table()
    set_limit("publish", slots)
    spans = Spans(meet=slots)
    record_between(monkeypatch, publish, "_select", "_mark_published", spans)

    published = publish_flow(ids)

    assert published == ["lake-shore-01.jpg", "lake-shore-02.jpg"]
    assert {r.status for r in by_id(load_photos(settings=bounded, ids=ids)).values()} == {"published"}
    assert len(spans.spans) == 2
    return spans


def test_publish_chunks_never_overlap_with_one_slot(set_limit, bounded, db, tmp_path,
                                                    monkeypatch):
    spans = _publish_two_chunks(1, set_limit, bounded, db, tmp_path, monkeypatch)
    assert spans.most == 1
    assert not spans.overlapping()


def test_publish_chunks_overlap_with_two_slots(set_limit, bounded, db, tmp_path, monkeypatch):
    spans = _publish_two_chunks(2, set_limit, bounded, db, tmp_path, monkeypatch)
    assert spans.most == 2
    assert spans.overlapping()


# --------------------------------------------------------------------------- the wait


def test_a_freed_slot_is_taken_within_a_second_whatever_retry_after_the_server_names(set_limit):
    """A chunk waiting for a slot sleeps the Retry-After of the server's 423: the limit's
    average occupancy (2 s) × the requests it denied (51 here), capped at the server's
    maximum_concurrency_slot_wait_seconds, +30 % jitter. Prefect's cap (30 s) made that
    22-39 s although the slot frees in 0.5 s; galleryflow's environment caps it at 1 s
    (galleryflow.core.prefect_env), which the test harness's server was started with."""
    from prefect.client.orchestration import get_client

    from galleryflow.core.prefect_run import forget_local_gates, limit_slot

    forget_local_gates()  # both wait at the server, as chunks of two processes do
    set_limit("publish", 1)
    with get_client(sync_client=True) as client:
        # The v2 API's own update (the client's global-limit update has no such field).
        client._client.patch("/v2/concurrency_limits/publish",
                             json={"denied_slots": 50}).raise_for_status()
    held, freed_at = threading.Event(), []

    def holder() -> None:
        with limit_slot("publish", 30):
            held.set()
            time.sleep(0.5)
            freed_at.append(time.monotonic())

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    with limit_slot("publish", 60):
        taken_at = time.monotonic()
        assert freed_at  # it waited for the holder: one slot
    thread.join(30)
    assert taken_at - freed_at[0] < 5  # within the capped Retry-After (≤ 1.3 s), with room


def test_chunks_of_one_process_hand_a_slot_on_without_the_server_refusing_any(
        set_limit, monkeypatch):
    """Four chunks of one process, one slot: they queue in the process (a semaphore of the
    limit's size, read when the stage starts), so the server is asked only by the chunk
    whose turn it is, once each: no request refused and retried after a Retry-After."""
    from prefect.client.orchestration._concurrency_limits.client import (
        ConcurrencyLimitAsyncClient,
    )

    from galleryflow.core.prefect_run import ensure_limit, limit_slot

    asked: list[str] = []
    real = ConcurrencyLimitAsyncClient.increment_concurrency_slots_with_lease

    async def counted(self, *args, **kwargs):
        asked.append("scoring")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(ConcurrencyLimitAsyncClient, "increment_concurrency_slots_with_lease",
                        counted)
    set_limit("scoring", 1)
    assert ensure_limit("scoring", 4) is False  # it exists: its own size (1) is what counts
    spans = Spans(meet=1)

    def chunk() -> None:
        with limit_slot("scoring", 60):
            spans.leave(spans.enter())  # inside for a second

    threads = [threading.Thread(target=chunk) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(spans.spans) == 4 and spans.most == 1
    assert len(asked) == 4  # one request per chunk, none refused


def test_a_limit_checked_at_the_runs_start_is_not_asked_for_again_by_its_stage(
        set_limit, monkeypatch):
    """check_limits_soon starts the checks off the flow's thread; the stage's ensure_limit
    takes that answer (the server asked once per limit, from another thread) and the
    process's queue gets the limit's size. Another run asks afresh."""
    from galleryflow.core import prefect_run

    set_limit("scoring", 2)
    set_limit("publish", 3)
    asked: list[tuple[str, str]] = []
    real = prefect_run._ensure_limit_now

    def counted(name, slots):
        asked.append((name, threading.current_thread().name))
        time.sleep(0.05)  # a busy server: the flow's thread must not wait for it
        return real(name, slots)

    monkeypatch.setattr(prefect_run, "_ensure_limit_now", counted)
    prefect_run.forget_local_gates()
    waits: list[float] = []

    @flow
    def run_that_checks_first() -> tuple[bool, bool]:
        started = time.perf_counter()
        prefect_run.check_limits_soon({"scoring": 1, "publish": 1})
        waits.append(time.perf_counter() - started)
        return prefect_run.ensure_limit("scoring", 1), prefect_run.ensure_limit("publish", 1)

    assert run_that_checks_first() == (False, False)  # both existed: left as they were
    assert waits[0] < 0.04
    assert sorted(asked) == [("publish", "check-limit-publish"), ("scoring", "check-limit-scoring")]
    assert prefect_run._local_gates["scoring"][0] == 2 and prefect_run._local_gates["publish"][0] == 3

    asked.clear()

    @flow
    def later_run() -> bool:
        return prefect_run.ensure_limit("scoring", 1)

    assert later_run() is False
    assert asked == [("scoring", threading.current_thread().name)]  # asked itself, here
    assert not prefect_run._checking  # the first run's checks were all taken


def test_a_check_nobody_took_is_done_before_the_flow_ends_and_dropped(prefect_api, monkeypatch):
    """A run that ends before its stages (a set that fails validation) leaves no check
    running on its closed client: the flow's end waits for it and drops it."""
    from galleryflow.core import prefect_run
    from galleryflow.core.progress import flushed

    finished: list[str] = []

    def slow_check(name, slots):
        time.sleep(0.2)
        finished.append(name)
        return False

    monkeypatch.setattr(prefect_run, "_ensure_limit_now", slow_check)

    @flow
    @flushed
    def fails_before_scoring() -> None:
        prefect_run.check_limits_soon({"scoring": 1, "publish": 1})
        raise ValueError("a set failed validation")

    with pytest.raises(ValueError):
        fails_before_scoring()
    assert sorted(finished) == ["publish", "scoring"]  # done before the flow returned
    assert not prefect_run._checking


def test_a_check_left_by_an_earlier_run_is_dropped(prefect_api, monkeypatch):
    from galleryflow.core import prefect_run

    monkeypatch.setattr(prefect_run, "_ensure_limit_now", lambda name, slots: False)

    @flow
    def checks_but_never_scores() -> None:  # a flow without @flushed: nobody settles it
        prefect_run.check_limits_soon({"scoring": 1})

    checks_but_never_scores()
    assert len(prefect_run._checking) == 1

    @flow
    def next_run() -> None:
        prefect_run.check_limits_soon({"publish": 1})

    next_run()
    assert [name for _, name in prefect_run._checking] == ["publish"]
    prefect_run.forget_local_gates()
