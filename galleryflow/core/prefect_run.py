"""Prefect plumbing written once: the run's logger, the current run id, and the
global concurrency limits galleryflow throttles with.

The limits are *global* concurrency limits held with ``prefect.concurrency.sync.
concurrency`` around the work they guard. (A task tag such as ``publish`` is not
enough: since Prefect 3.4.19 a tag limit is the global limit named ``tag:<tag>``,
so a global limit named ``publish`` and a task tagged ``publish`` have nothing to
do with each other, and neither throttles.)

Acquisition waits a bounded time: a slot can leak — a lease is freed by the
server's Repossessor, which an ephemeral Prefect server (the demo, ``run --here``,
Prefect's test harness) does not run — and an unbounded wait would hang the run.

Chunks of one process queue for a limit in the process first (a semaphore of the
limit's size as :func:`ensure_limit` last read it at the stage's start), and only
the chunks that got through ask the server. Without it, every chunk asked the
server, and those refused slept the server's Retry-After (up to ~1.3 s) after the
slot was freed: the four scoring chunks of 500 small photos, one slot, took 1.23 s
where one after another takes 0.6 s. Other processes still meet at the server.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from typing import Literal

from galleryflow.core.stages import StageError

log = logging.getLogger("galleryflow")

LimitName = Literal["ollama", "scoring", "publish"]
# What each limit guards (and so what its slots mean), for `galleryflow setup`'s report.
LIMITS: dict[LimitName, str] = {
    "ollama": "chunks talking to the vision model server at once",
    "scoring": "scoring chunks (CLIP / BRISQUE on the CPU or GPU) at once",
    "publish": "publish chunks uploading to the site at once",
}


def run_logger(fallback: logging.Logger | None = None) -> logging.Logger | logging.LoggerAdapter:
    """The current run's logger (so the Prefect UI shows the line), else ``fallback``
    (a module's own logger, so its level and handlers apply), else galleryflow's."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return fallback or log


def flow_run_id() -> str | None:
    """The id of the flow run this code runs in (a task's parent flow run), or None."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        return str(flow_ctx.flow_run.id)
    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run.flow_run_id is not None:
        return str(task_ctx.task_run.flow_run_id)
    return None


_local_gates: dict[str, tuple[int, threading.BoundedSemaphore]] = {}
_local_gates_lock = threading.Lock()


def _note_slots(name: str, slots: int) -> None:
    """The limit's size as the server has it: this process's queue for it gets as many."""
    with _local_gates_lock:
        known = _local_gates.get(name)
        if known is None or known[0] != slots:
            # A new size gets a new semaphore; chunks holding the old one release it.
            _local_gates[name] = (slots, threading.BoundedSemaphore(max(1, slots)))


def forget_local_gates() -> None:
    """Forget the limits' sizes (chunks then queue at the server only, until the next
    :func:`ensure_limit`) and the checks started for a run. Also what a forked child
    starts with."""
    global _local_gates_lock, _checking_lock
    _local_gates.clear()
    _local_gates_lock = threading.Lock()
    _checking.clear()
    _checking_lock = threading.Lock()


os.register_at_fork(after_in_child=forget_local_gates)


# Checks of the limits a flow run will need, started at its beginning (check_limits_soon):
# (flow run id, limit name) -> the check's outcome, taken by the stage's ensure_limit.
_checking: dict[tuple[str | None, str], Future[bool]] = {}
_checking_lock = threading.Lock()


def check_limits_soon(limits: Mapping[LimitName, int]) -> None:
    """Start :func:`ensure_limit` for each of ``limits`` (name -> slots when created) on a
    thread of its own, now; the stage that needs a limit then takes the answer instead
    of asking the server itself.

    A flow calls this at its start: each check is a round trip to a server that is busy
    recording the run (20-30 ms measured before stage 5 of a 12-photo run, where the
    stage's first chunk waited for it), made instead while validation and intake work.
    A check started here serves its flow run only (a later run asks again: a limit can
    change between runs); one nobody takes is waited for as the flow ends
    (:func:`settle_limit_checks`) and dropped.
    """
    run = flow_run_id()
    context = contextvars.copy_context()  # the run's API client and logger
    with _checking_lock:  # an earlier run's checks nobody took
        for stale in [key for key in _checking if key[0] != run]:
            del _checking[stale]
    for name, slots in limits.items():
        future: Future[bool] = Future()
        with _checking_lock:
            _checking[(run, name)] = future

        def check(name: LimitName = name, slots: int = slots, future: Future[bool] = future) -> None:
            try:
                future.set_result(context.copy().run(_ensure_limit_now, name, slots))
            except BaseException as exc:  # _ensure_limit_now logs and returns; never lost
                future.set_exception(exc)

        threading.Thread(target=check, name=f"check-limit-{name}", daemon=True).start()


def settle_limit_checks(timeout: float = 10.0) -> None:
    """Wait for the checks this flow run started and nobody took (a run that ended before
    its stages did), then drop them: they use the run's API client and logger, which
    the flow closes as it ends (:func:`galleryflow.core.progress.flushed` calls this)."""
    run = flow_run_id()
    with _checking_lock:
        mine = [_checking.pop(key) for key in [k for k in _checking if k[0] == run]]
    deadline = time.monotonic() + timeout
    for future in mine:
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # the check logged its own trouble; a late one is not waited for
            pass


def ensure_limit(name: LimitName, slots: int) -> bool:
    """Create the global concurrency limit ``name`` if it does not exist; True if created.

    An existing limit is left as it is (``galleryflow setup`` is the place that
    changes one). Failing to reach the server is logged, never raised: the limit is
    protection, not a reason to stop a stage. When this flow run started the check
    already (:func:`check_limits_soon`), its answer is taken (waited for, if need be).
    """
    with _checking_lock:
        started = _checking.pop((flow_run_id(), name), None)
    if started is not None:
        return started.result()
    return _ensure_limit_now(name, slots)


def _ensure_limit_now(name: LimitName, slots: int) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
                if existing.active:
                    _note_slots(name, existing.limit)
                else:  # an inactive limit throttles nothing: neither does the process
                    with _local_gates_lock:
                        _local_gates.pop(name, None)
                return False
            except ObjectNotFound:
                pass
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=max(1, slots)))
                _note_slots(name, max(1, slots))
            except ObjectAlreadyExists:
                return False
    except Exception as exc:
        run_logger().warning("could not check or create the concurrency limit %r: %s", name, exc)
        return False
    run_logger().info("created the global concurrency limit %r with %d slot(s)", name, slots)
    return True


@contextmanager
def limit_slot(name: LimitName, wait_seconds: float, server: bool = True) -> Iterator[None]:
    """Hold one slot of the global limit ``name``, waiting at most ``wait_seconds``.

    A missing limit does not block (``strict=False``); a slot not free in time is
    a :class:`StageError` that says how to inspect and free a leaked one.
    ``server=False``: only this process's turn (its chunks one after another, as the
    limit's size says), without a slot at the server: for work that shares this
    process's threads with its other chunks but holds nothing the limit is for.
    """
    from prefect.concurrency.sync import concurrency

    deadline = time.monotonic() + wait_seconds
    with ExitStack() as stack:
        try:
            known = _local_gates.get(name)
            if known is not None:  # this process's chunks first (module docstring)
                if not known[1].acquire(timeout=wait_seconds):
                    raise TimeoutError(name)
                stack.callback(known[1].release)
            if server:
                stack.enter_context(concurrency(name, occupy=1, strict=False, timeout_seconds=max(
                    0.1, deadline - time.monotonic())))
        except TimeoutError as exc:
            raise StageError(
                f"no free slot of the global concurrency limit {name!r} after "
                f"{wait_seconds:.0f} s: another run holds it, or a run that crashed left it "
                f"taken. Check with `prefect global-concurrency-limit inspect {name}`; free a "
                f"leaked slot with `prefect global-concurrency-limit update {name} "
                "--active-slots 0`"
            ) from exc
        yield


# ------------------------------------------------------------------ gate wake-ups
#
# A paused gate learns of its answer by polling the server (an answer can come
# from the UI or another machine). An answer given in this very process (the
# terminal reviewer, `--approve-all`, the review page served by this process)
# also wakes it at once, instead of leaving the run idle until its next poll.

_gate_wakeups: dict[str, threading.Event] = {}
_gate_wakeups_lock = threading.Lock()


def gate_wakeup(run_id: str) -> threading.Event:
    """The event a paused gate of ``run_id`` waits on between polls."""
    with _gate_wakeups_lock:
        return _gate_wakeups.setdefault(str(run_id), threading.Event())


def wake_gate(run_id: str) -> None:
    """Say that ``run_id``'s gate was answered (a no-op when no gate of this process waits)."""
    with _gate_wakeups_lock:
        event = _gate_wakeups.get(str(run_id))
    if event is not None:
        event.set()


def forget_gate(run_id: str) -> None:
    with _gate_wakeups_lock:
        _gate_wakeups.pop(str(run_id), None)


# ------------------------------------------------------------------ flow heartbeats
#
# Prefect 3.9 sends flow-run heartbeats by default (every 180 s, for zombie-flow
# automations) from a daemon thread that sleeps in 1-s steps, and the sync engine
# joins that thread when the flow ends: every flow run, however short, ended up to
# 1 s later than its last task (0.2–0.6 s measured at the end of `galleryflow run`).
# Prefect's async engine already leaves the thread to end by itself
# (``join_on_exit=False``); so does this. Heartbeats are sent exactly as before, and
# the thread still stops within a second of the flow's end without sending another
# (it checks its stop event before every one).

_UNJOINED = "_galleryflow_unjoined"


def end_heartbeats_without_waiting() -> bool:
    """Make Prefect's sync flow engine stop its heartbeat thread without waiting for it.
    Idempotent; True when the engine now works so. A Prefect whose heartbeat helper
    has another shape is left alone (False; ``make test-latest`` says so)."""
    import inspect

    from prefect import flow_engine

    original = getattr(flow_engine, "_send_heartbeats", None)
    if original is None:
        return False
    if getattr(original, _UNJOINED, False):
        return True
    if "join_on_exit" not in inspect.signature(original).parameters:
        return False

    @contextmanager
    def send_heartbeats(engine, join_on_exit: bool = True) -> Iterator[None]:  # noqa: ANN001
        with original(engine, join_on_exit=False):
            yield

    setattr(send_heartbeats, _UNJOINED, True)
    flow_engine._send_heartbeats = send_heartbeats
    return True
