"""``galleryflow watch``: intake folders that start runs by themselves.

The service watches ``<intake root>/urgent/`` and ``<intake root>/queue/`` (file
system events through watchdog; ``--polling`` for network shares, where events
do not arrive) and looks at every set folder again on each tick, so a missed
event only costs a tick.

- A set folder is **ready** when it holds the ``.ready`` marker, or when this
  service has seen it unchanged (names, sizes, mtimes) for
  ``watch.quiet_seconds`` with no partial download left in it. The watch trusts
  its own clock, not file times, so a network share whose clock is off or a
  copy that preserves mtimes cannot make a set look finished early.
- A ready set under ``urgent/`` is **claimed** (its content sha256 goes into
  ``seen_content``) and a run of ``process-sets/urgent`` is started at once for
  exactly that folder.
- A ready set under ``queue/`` is left where it is: the nightly run
  (``process-sets/nightly``) takes every ready, unclaimed set under ``queue/`` in
  one run at its scheduled time. The watch logs that it saw it; it starts
  nothing, so a day's sets are processed together, at night, as scheduled.
- Content already claimed (by this service, a scheduled run, or before a
  restart) is skipped with a log line; files that are not images are named in
  the log once and never processed.

**Restarts.** The claim is written *before* the run is created, and the run is
created with an idempotency key derived from the claim, so a service that
stops between the two finishes the job on its next start (the server returns
the run it may already have created): no set is lost and none starts twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from galleryflow.intake.queue import (
    QUEUES,
    Claim,
    FolderState,
    claim,
    content_digest,
    inspect_folder,
    intake_root,
    is_ready,
    pending_claims,
    set_claim_run,
    set_folders,
)
from galleryflow.core.settings import Settings

log = logging.getLogger("galleryflow.app.watch")

RETRY_SECONDS = 30.0

# Starts a run for a claim and returns its flow run id (tests may pass their own).
RunStarter = Callable[[Claim], str]


def idempotency_key(c: Claim) -> str:
    # The claim's creation time makes a re-claim after a released failure a new run.
    return f"galleryflow-watch:{c.content_sha256}:{c.created_at.isoformat()}"


def deployment_run_starter(settings: Settings) -> RunStarter:
    """Start ``watch.urgent_deployment`` for exactly the claimed folder."""

    def start(c: Claim) -> str:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(settings.watch.urgent_deployment)
            run = client.create_flow_run_from_deployment(
                deployment.id,
                parameters={"set_dirs": [c.folder], "intake_dir": None},
                idempotency_key=idempotency_key(c),
                tags=["watch"],
            )
        return str(run.id)

    return start


@dataclass
class _Tracked:
    listing: str
    since: float  # when this service first saw this listing
    done: bool = False  # handled for this listing (started, skipped or left for tonight)
    retry_at: float = 0.0  # after a failed start: not before this time


class WatchService:
    """Scan, decide, start. ``tick()`` does one pass; ``run()`` loops with an observer."""

    def __init__(self, settings: Settings, root: Path | None = None, polling: bool | None = None,
                 starter: RunStarter | None = None, clock: Callable[[], float] = time.monotonic,
                 one_shot: bool = False):
        self.settings = settings
        self.root = (root or intake_root(settings)).expanduser().resolve()
        self.polling = settings.watch.polling if polling is None else polling
        self.starter = starter or deployment_run_starter(settings)
        self.clock = clock
        # One pass (cron) cannot watch a folder stay unchanged: it trusts file times.
        self.one_shot = one_shot
        self._tracked: dict[Path, _Tracked] = {}
        self._logged: set[str] = set()  # one log line per ignored file / stray folder
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()
        self._observer: Any = None
        self.started_runs: list[str] = []  # flow run ids started by this instance

    # --- events -------------------------------------------------------------
    def _set_folder_of(self, path: str) -> Path | None:
        try:
            parts = Path(path).resolve().relative_to(self.root).parts
        except ValueError:
            return None
        if len(parts) >= 2 and parts[0] in QUEUES:
            return self.root / parts[0] / parts[1]
        return None

    def on_change(self, *paths: str) -> None:
        """Called from the observer thread: look at these set folders on the next tick."""
        folders = {f for f in (self._set_folder_of(p) for p in paths if p) if f}
        with self._lock:
            self._dirty |= folders

    # --- one pass -----------------------------------------------------------
    def folders(self) -> list[Path]:
        found = []
        for queue in QUEUES:
            found += set_folders(self.root / queue)
        for stray in set_folders(self.root):
            if stray.name not in QUEUES:
                self._log_once(f"stray:{stray}", "%s is not under queue/ or urgent/: ignored "
                               "(move it into one of them)", stray)
        return found

    def tick(self) -> None:
        """Look at every set folder once and act on those that became ready."""
        with self._lock:
            self._dirty.clear()  # a full pass covers them
        now = self.clock()
        present = set()
        for folder in self.folders():
            present.add(folder)
            try:
                self._consider(folder, now)
            except Exception as exc:  # one odd folder must not stop the service
                log.error("%s: %s: %s", folder, type(exc).__name__, exc)
        for gone in set(self._tracked) - present:
            del self._tracked[gone]

    def _consider(self, folder: Path, now: float) -> None:
        state = inspect_folder(folder, self.settings)
        for name in state.ignored:
            self._log_once(f"ignored:{folder / name}", "%s: not an image file, ignored",
                           folder / name)
        tracked = self._tracked.get(folder)
        if tracked is None or tracked.listing != state.listing:
            tracked = self._tracked[folder] = _Tracked(listing=state.listing, since=now)
        if tracked.done or now < tracked.retry_at or not self._ready(state, tracked, now):
            return
        queue = folder.parent.name
        digest = content_digest(state, self.settings)
        if queue == "urgent":
            tracked.done = self._start_urgent(folder, digest)
            if not tracked.done:  # the API is down or refused: try again a little later
                tracked.retry_at = now + RETRY_SECONDS
        else:
            self._leave_for_nightly(folder, digest)
            tracked.done = True

    def _ready(self, state: FolderState, tracked: _Tracked, now: float) -> bool:
        if not state.images:
            return False
        if state.marker:
            return True
        if self.one_shot:
            return is_ready(state, self.settings)
        return not state.partial and now - tracked.since >= self.settings.watch.quiet_seconds

    def _start_urgent(self, folder: Path, digest: str) -> bool:
        """Claim and start; False means 'try again next tick' (the API was down)."""
        c = claim(digest, str(folder), "urgent", None)
        if not c.mine and not (c.flow_run_id is None and c.queue == "urgent"):
            log.info("%s: content already taken (run %s, %s), skipped", folder,
                     c.flow_run_id or "?", c.created_at.isoformat(sep=" ", timespec="seconds"))
            return True
        return self._start(c)

    def _start(self, c: Claim) -> bool:
        try:
            flow_run_id = self.starter(c)
        except Exception as exc:
            log.error("%s: could not start %s (%s: %s); the set stays claimed and is retried",
                      c.folder, self.settings.watch.urgent_deployment, type(exc).__name__, exc)
            return False
        set_claim_run(c.id, flow_run_id)
        self.started_runs.append(flow_run_id)
        from galleryflow.notifications import run_url

        log.info("%s: ready; started %s run %s %s", c.folder, self.settings.watch.urgent_deployment,
                 flow_run_id, run_url(flow_run_id) or "")
        return True

    def _leave_for_nightly(self, folder: Path, digest: str) -> None:
        from galleryflow.db import SeenContent, session_scope
        from sqlalchemy import select

        with session_scope() as db:
            taken = db.scalars(select(SeenContent).where(SeenContent.content_sha256 == digest)).first()
        if taken is not None:
            log.info("%s: content already taken (run %s), skipped", folder, taken.flow_run_id or "?")
        else:
            log.info("%s: ready; %s takes it at its next run", folder,
                     self.settings.watch.nightly_deployment)

    def resume_pending(self) -> None:
        """Claims a previous instance made without a run (it stopped in between)."""
        for c in pending_claims("urgent"):
            log.info("%s: claimed before a restart but not started yet: starting it now", c.folder)
            self._start(c)

    def _log_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info(message, *args)

    # --- the service --------------------------------------------------------
    def start(self) -> None:
        from galleryflow.db import migrate
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        migrate(self.settings.db_url)
        for queue in QUEUES:
            (self.root / queue).mkdir(parents=True, exist_ok=True)
        self.resume_pending()
        service = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                service.on_change(str(event.src_path), str(getattr(event, "dest_path", "") or ""))

        if self.polling:
            from watchdog.observers.polling import PollingObserver

            self._observer = PollingObserver(timeout=self.settings.watch.poll_interval_seconds)
        else:
            from watchdog.observers import Observer

            self._observer = Observer()
        self._observer.schedule(Handler(), str(self.root), recursive=True)
        self._observer.start()
        log.info("watching %s (%s observer; ready after %.0f s quiet or a %s marker)", self.root,
                 "polling" if self.polling else "native", self.settings.watch.quiet_seconds,
                 self.settings.watch.ready_marker)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    def run(self, stop: threading.Event | None = None) -> None:
        """Run until ``stop`` is set (or Ctrl-C): a full pass per tick, sooner on events."""
        stop = stop or threading.Event()
        tick = max(0.2, min(self.settings.watch.poll_interval_seconds,
                            self.settings.watch.quiet_seconds / 4 or 0.2))
        self.start()
        try:
            self.tick()
            while not stop.is_set():
                deadline = time.monotonic() + tick
                # wake early when an event arrives, so a .ready marker acts at once
                while time.monotonic() < deadline and not stop.is_set():
                    with self._lock:
                        dirty = bool(self._dirty)
                    if dirty:
                        break
                    stop.wait(0.1)
                if not stop.is_set():
                    self.tick()
        finally:
            self.stop()
