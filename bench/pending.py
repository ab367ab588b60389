"""How long task runs sat in Pending before they ran, from Prefect's own records.

    .venv/bin/python bench/pending.py [GALLERYFLOW_HOME]

Reads ``task_run_state`` of the embedded server's database
(``GALLERYFLOW_HOME/prefect/prefect.db``, read-only) and prints, per task run,
the gap between its first Pending and its first Running state, the largest gap
of all, and how many exceed 0.2 s (the target: no stage's first chunk waits
longer). ``bench/intake.py`` prints the same after its runs.

What a gap is made of: the tag concurrency check (one request to the server)
and any retry of a request. Two causes of ~2 s gaps found so far, both the
client's 2 s back-off on a retried request: a pooled keep-alive connection the
server had closed (fixed: ``galleryflow.core.prefect_env`` sets the server's
keep-alive above the client's), and SQLite's "database is locked" answered as
503 by a busy embedded server (PostgreSQL-backed servers do not have it).
"""

from __future__ import annotations

import sqlite3
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

TARGET_SECONDS = 0.2


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _database(home: Path) -> Path:
    """The embedded server's SQLite file: the one this process configured, else the
    default under ``home``."""
    import os

    url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "")
    if url.startswith("sqlite") and ":///" in url:
        return Path(url.split(":///", 1)[1])
    return home / "prefect" / "prefect.db"


def pending_gaps(home: Path) -> list[tuple[datetime, str, float]]:
    """(pending since, task run name, seconds to Running) for every task run that ran."""
    database = _database(home)
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        states = connection.execute(
            "select tr.name, s.type, s.timestamp from task_run tr "
            "join task_run_state s on s.task_run_id = tr.id order by s.timestamp"
        ).fetchall()
    finally:
        connection.close()
    first: dict[str, dict[str, datetime]] = defaultdict(dict)
    for name, kind, stamp in states:
        first[name].setdefault(kind, _when(stamp))
    return sorted(
        (seen["PENDING"], name, (seen["RUNNING"] - seen["PENDING"]).total_seconds())
        for name, seen in first.items() if "PENDING" in seen and "RUNNING" in seen
    )


# Task runs of stages 1–6, by name prefix (a rerun may skip the later ones).
STAGES_1_TO_6 = ("validate-sets", "prepare-db", "open-session", "intake-chunk", "read-exif",
                 "review-rows", "score-chunk", "compute-scores", "score-and-resize-chunk",
                 "model-resize-chunk")


def stage_spans(home: Path, first: str = "validate-sets",
                last: tuple[str, ...] = STAGES_1_TO_6) -> list[float]:
    """Per flow run with a stage 1 (oldest first): seconds from the start of ``first``
    to the end of the last task run of ``last``, from Prefect's task run records."""
    connection = sqlite3.connect(f"file:{_database(home)}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute(
            "select fr.id, fr.start_time, tr.name, tr.start_time, tr.end_time from flow_run fr "
            "join task_run tr on tr.flow_run_id = fr.id order by fr.start_time").fetchall()
    finally:
        connection.close()
    spans: dict[str, list[datetime]] = {}
    order: list[str] = []
    for run_id, _, name, started, ended in rows:
        if run_id not in spans:
            spans[run_id] = []
            order.append(run_id)
        if started and name.startswith(first):
            spans[run_id].append(_when(started))
        if ended and name.startswith(last):
            spans[run_id].append(_when(ended))
    return [(max(t) - min(t)).total_seconds() for run_id in order if len(t := spans[run_id]) >= 2]


def print_gaps(home: Path, label: str = "", show: int = 5) -> float:
    """Print the largest gaps; return the largest."""
    gaps = pending_gaps(home)
    if not gaps:
        print(f"{label}no task runs recorded in {home}")
        return 0.0
    worst = sorted(gaps, key=lambda g: g[2], reverse=True)
    over = [g for g in gaps if g[2] > TARGET_SECONDS]
    print(f"\n{label}Pending→Running, from Prefect's task_run_state: {len(gaps)} task runs, "
          f"largest {worst[0][2]:.3f} s ({worst[0][1]}), {len(over)} over {TARGET_SECONDS} s")
    for _, name, seconds in worst[:show]:
        print(f"  {seconds:7.3f} s  {name}")
    return worst[0][2]


if __name__ == "__main__":
    print_gaps(Path(sys.argv[1] if len(sys.argv) > 1 else ".galleryflow").resolve())


def print_task_runs(home: Path, runs_back: int = 1) -> None:
    """A table of one flow run's task runs by kind, from Prefect's records: how many,
    when the first started and the last ended (seconds from the run's first task
    run), and their summed run time — where the orchestration time goes."""
    connection = sqlite3.connect(f"file:{_database(home)}?mode=ro", uri=True, timeout=5)
    try:
        runs = connection.execute(
            "select distinct fr.id, fr.start_time from flow_run fr join task_run tr on "
            "tr.flow_run_id = fr.id where tr.name like 'validate-sets%' "
            "order by fr.start_time desc").fetchall()
        if len(runs) < runs_back:
            return
        rows = connection.execute(
            "select name, start_time, end_time from task_run where flow_run_id = ? "
            "order by start_time", (runs[runs_back - 1][0],)).fetchall()
    finally:
        connection.close()
    kinds: dict[str, list[float]] = {}
    t0: datetime | None = None
    for name, started, ended in rows:
        if not started or not ended:
            continue
        start, end = _when(started), _when(ended)
        t0 = t0 or start
        kind = name.rsplit("-", 1)[0]
        first, last, count, busy = kinds.get(kind, [1e9, 0.0, 0, 0.0])
        kinds[kind] = [min(first, (start - t0).total_seconds()),
                       max(last, (end - t0).total_seconds()), count + 1,
                       busy + (end - start).total_seconds()]
    print(f"{'task runs':<28} {'runs':>5} {'first start':>12} {'last end':>9} {'busy s':>8}")
    for kind, (first, last, count, busy) in kinds.items():
        print(f"{kind:<28} {count:>5} {first:>12.2f} {last:>9.2f} {busy:>8.2f}")
