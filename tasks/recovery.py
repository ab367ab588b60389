"""Crash recovery: sessions whose run died are rolled back, and what a kill leaves is
cleared, by the next run or by ``galleryflow recover`` (and ``galleryflow publish``).

A session (one set in one run, stages 2–7) is *dead* when its status still says
``running`` but

- the process that ran it is gone (``image_set.owner``, host:pid:start-time,
  checked on the host that wrote it: :mod:`galleryflow.core.liveness`), or
- on another host, Prefect says its flow run ended (Crashed, Failed, Cancelled,
  or even Completed: a live run never leaves its session ``running``).

A session whose rollback raised is ``rollback_failed`` and dead by definition.
Recovering a dead session applies its ledger (:func:`tasks.rollback.rollback_session`:
this session's copies, rows and work files go, refreshed rows get their values
back), removes the hidden ``.part`` files of interrupted atomic writes in its set's
folders, and releases its run's intake claims, so the next scheduled run takes the
set again. Committed sessions never roll back: an interrupted *publish* is finished
by ``galleryflow publish`` (rows stay ``approved`` until the gallery and the site
have them).

Also cleared: ledgers of sessions that committed but died before discarding
theirs, and publish work files of rows already published.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import select

from galleryflow.core.ledger import SessionLedger
from galleryflow.core.liveness import owner_alive
from galleryflow.core.prefect_run import run_logger
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.status import SetStatus
from galleryflow.db import ImageSet, session_scope
from galleryflow.intake.queue import release_claims
from galleryflow.publishing.cleanup import cleanup_work_files, published_leftovers
from tasks.model_resize import set_dir_name
from tasks.rollback import remove_empty_folders, rollback_or_mark

_log = logging.getLogger(__name__)

_FINISHED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Recovered(BaseModel):
    image_set_id: int
    set: str
    why: str
    outcome: str  # rolled_back | rollback_failed


class RecoveryReport(BaseModel):
    sessions: list[Recovered] = Field(default_factory=list)
    partial_files: int = 0
    ledgers: int = 0
    work_files: int = 0
    claims: list[str] = Field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.sessions or self.partial_files or self.ledgers or self.work_files
                    or self.claims)

    def lines(self) -> list[str]:
        out = [f"set {r.set} (session {r.image_set_id}): {r.why}; {r.outcome.replace('_', ' ')}"
               for r in self.sessions]
        if self.partial_files:
            out.append(f"{self.partial_files} partial file(s) of interrupted writes removed")
        if self.ledgers:
            out.append(f"{self.ledgers} ledger(s) of committed sessions removed")
        if self.work_files:
            out.append(f"{self.work_files} work file(s) of published rows removed")
        if self.claims:
            out.append(f"intake claims released (taken again by the next run): "
                       f"{', '.join(self.claims)}")
        return out


def _prefect_says_finished(flow_run_id: str) -> str | None:
    """The flow run's final state name, when Prefect can tell and it is final."""
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except Exception:  # no API, unknown run: cannot tell from here
        return None
    if state is not None and state.type.value in _FINISHED:
        return state.name
    return None


def dead_reason(image_set: ImageSet) -> str | None:
    """Why this ``running`` session is dead, or None while it may be alive."""
    alive = owner_alive(image_set.owner)
    if alive is True:
        return None
    if alive is False:
        return "its process is gone (killed or crashed)"
    if image_set.flow_run_id:
        state = _prefect_says_finished(image_set.flow_run_id)
        if state:
            return f"its flow run ended {state}"
    return None


def _remove_partials(settings: Settings, set_keys: set[str]) -> int:
    """Hidden ``.part`` files (atomic writes cut short) and pending copies in these
    sets' folders of incoming/ and work/."""
    removed = 0
    for key in set_keys:
        for folder in (settings.incoming_dir / key, settings.work_dir / set_dir_name(key)):
            if not folder.is_dir():
                continue
            for path in list(folder.rglob(".*.part")) + list(folder.glob(".pending/*")):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
    # (work/publish/<row>/ is left alone: another run may be publishing; a row's
    # folder goes as a whole once the row is published, see published_leftovers.)
    return removed


def recover(settings: Settings | None = None) -> RecoveryReport:
    """Roll back dead sessions and clear what kills left; safe to run at any time
    (a live session is never touched)."""
    settings = settings or get_settings()
    report = RecoveryReport()
    with session_scope() as db:
        candidates = list(db.scalars(select(ImageSet).where(
            ImageSet.status.in_([SetStatus.RUNNING, SetStatus.ROLLBACK_FAILED]))))
        live_keys = set()
        dead: list[tuple[ImageSet, str]] = []
        for image_set in candidates:
            if image_set.status == SetStatus.ROLLBACK_FAILED:
                dead.append((image_set, "its rollback had failed"))
                continue
            why = dead_reason(image_set)
            if why is None:
                live_keys.add(image_set.set_key)
            else:
                dead.append((image_set, why))
        committed = [s.id for s in db.scalars(select(ImageSet).where(
            ImageSet.status.notin_([SetStatus.RUNNING, SetStatus.ROLLBACK_FAILED])))]
    for image_set, why in dead:
        ok = rollback_or_mark(image_set.id, settings,
                              cause=f"recovered: {why}; rolled back so a rerun starts clean")
        report.sessions.append(Recovered(image_set_id=image_set.id, set=image_set.name, why=why,
                                         outcome="rolled_back" if ok else "rollback_failed"))
        if image_set.flow_run_id:
            report.claims += release_claims(image_set.flow_run_id)
    dead_keys = {s.set_key for s, _ in dead} - live_keys
    report.partial_files = _remove_partials(settings, dead_keys)
    for image_set_id in committed:
        ledger = SessionLedger(settings, image_set_id)
        if ledger.root.is_dir():
            ledger.discard()
            report.ledgers += 1
    report.work_files = cleanup_work_files(published_leftovers(settings), settings)
    if dead:
        remove_empty_folders(settings)
    if report.anything:
        logger = run_logger(_log)
        for line in report.lines():
            logger.warning("recover: %s", line)
    return report


def ledger_folders(settings: Settings) -> list[Path]:
    """The session ledgers on disk (for checks)."""
    root = settings.work_dir / ".sessions"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
