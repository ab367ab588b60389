"""Orchestration cost on many small photos: stages 1–6 through the ``process-sets``
flow beside the same library calls in a plain loop, in one process.

    .venv/bin/python bench/small_photos.py [--images 500] [--size 640x480] [--rounds 2]

What the ratio measures: everything Prefect and the flow add around the work —
task runs and their states, chunking, futures, result records, the concurrency
slot of the scoring stage — per photo. The plain loop calls exactly what the
tasks wrap (``validate_set_dirs``, ``open_session.fn``, ``intake_chunk.fn``,
``read_exif_chunk.fn``, ``review_rows_chunk.fn``, ``score_and_resize``) on the
whole set at once, in one thread of control (their own thread pools included),
with no Prefect run around it. The flow's span is read from Prefect's own task
run records (start of ``validate-sets`` to the end of the last stage-6 task
run), so the review gate, drafts and publish that follow are not counted.

Every run gets photos of its own (same sizes, other seeds), so no run is served
by another's cache; rounds are interleaved, which goes first alternates (a draft is
compared with every caption already in the home) and medians are printed. The targets of
the performance issue: the flow's stages 1–6 within 1.3× the plain loop, the
whole run within 2×. The plain loop goes on with stages 7–9 (``plain_rest``):
offline drafts, one approve-all decision, the local publish; the flow's whole
run is timed around the ``process-sets`` call (the gate answered in process, as
``--approve-all`` does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _generate(folder: Path, count: int, size: tuple[int, int], seed: int) -> None:
    from galleryflow.intake.samples import CAMERAS, SampleSpec, write_sample

    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        path = folder / f"small-{i:04d}.jpg"
        if not path.exists():
            write_sample(path, SampleSpec(name=path.name, width=size[0], height=size[1],
                                          taken_at=datetime(2026, 6, 1, 6) + timedelta(minutes=7 * i),
                                          camera=CAMERAS[i % 4], seed=seed * 100_000 + i,
                                          gps=(45.0, 7.0, 300.0)))

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, range(count)))


def plain_loop(folder: Path) -> tuple[float, float]:
    """Stages 1–6, then 7–9, as plain calls of the functions the tasks wrap; the seconds
    of each part."""
    from galleryflow.core.settings import get_settings
    from tasks.exif import ExifInput, read_exif_chunk
    from tasks.intake import IntakeItem, intake_chunk, open_session, prepare_db
    from tasks.review_rows import review_rows_chunk
    from tasks.score_and_resize import score_and_resize
    from tasks.validate import validate_set_dirs

    settings = get_settings()
    parts: dict[str, float] = {}
    start = mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        parts[name] = now - mark
        mark = now

    report = validate_set_dirs([folder], settings)
    prepare_db.fn()
    set_report = report.sets[0]
    image_set_id = open_session.fn(set_report, None, None, None)
    lap("validate, open")
    copied = intake_chunk.fn([IntakeItem.from_check(c) for c in set_report.accepted], image_set_id)
    lap("intake")
    exifs = read_exif_chunk.fn([ExifInput(sha256=r.sha256, path=r.incoming_path) for r in copied])
    lap("exif")
    row_ids, _ = review_rows_chunk.fn(copied, exifs, image_set_id)
    lap("review rows")
    score_and_resize(row_ids, image_set_id, settings)
    lap("score and resize")
    first = time.perf_counter() - start
    PLAIN_PARTS.clear()
    PLAIN_PARTS.update(parts)
    return first, plain_rest(row_ids, image_set_id, settings)


PLAIN_PARTS: dict[str, float] = {}
"""The last plain round's seconds by part, printed beside the flow's task runs."""


def plain_rest(row_ids: list[int], image_set_id: int, settings: Any) -> float:
    """Stages 7–9 as plain calls: drafts (the offline captioner, as in the flow), every
    row whose proof passed approved in one decision (what ``--approve-all`` answers,
    without the gate's pages, pause and thumbnails), the local publish in turn; seconds."""
    from flows.fanout import publish_approved
    from galleryflow.review.forms import BULK_APPROVE_PASSED, ReviewDecision
    from tasks.captioning import caption_rows
    from tasks.publish import publishable_row_ids
    from tasks.review_gate import apply_decisions

    start = time.perf_counter()
    caption_rows(row_ids, image_set_id)
    drafted = time.perf_counter()
    apply_decisions(ReviewDecision(rows=[], bulk=BULK_APPROVE_PASSED, reviewer="bench"),
                    row_ids, settings)
    approved = publishable_row_ids(settings, row_ids=row_ids)
    decided = time.perf_counter()
    publish_approved(approved, settings=settings)
    PLAIN_PARTS.update({"drafts": drafted - start, "approve": decided - drafted,
                        "publish": time.perf_counter() - decided})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--rounds", type=int, default=2,
                        help="an even number: the order alternates between rounds")
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "galleryflow-bench")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    sets = [args.workdir / f"small-{args.size}-{args.images}" / f"small-set-{k}"
            for k in range(2 * args.rounds)]
    print(f"generating {len(sets)} sets of {args.images} × {args.size} JPEGs (cached) …", flush=True)
    for k, folder in enumerate(sets):
        _generate(folder, args.images, size, seed=k + 1)

    home = Path(tempfile.mkdtemp(prefix="home-", dir=args.workdir))
    from bench._harness import close_home, open_home
    from bench.pending import print_task_runs, stage_spans

    process_sets = open_home(home, args.chunk_size)
    plain: list[float] = []
    plain_whole: list[float] = []
    walls: list[float] = []
    def run_plain(round_: int) -> None:
        first, rest = plain_loop(sets[2 * round_])
        plain.append(first)
        plain_whole.append(first + rest)
        print(f"round {round_ + 1}: plain loop {first:.2f} s (stages 1–6) + {rest:.2f} s "
              f"(stages 7–9)", flush=True)

    def run_flow(round_: int) -> None:
        start = time.perf_counter()
        process_sets([str(sets[2 * round_ + 1])])
        walls.append(time.perf_counter() - start)
        print(f"round {round_ + 1}: process-sets {walls[-1]:.2f} s (whole run)", flush=True)

    # Which goes first alternates: each draft is compared with the captions already in
    # the home, so whichever runs second in a round drafts against 500 more.
    for round_ in range(args.rounds):
        for run in (run_plain, run_flow) if round_ % 2 == 0 else (run_flow, run_plain):
            run(round_)
    spans = stage_spans(home)[-args.rounds:]
    n = args.images
    a, b = statistics.median(spans), statistics.median(plain)
    print(f"\n{n} photos of {args.size}, chunk size {args.chunk_size}, {os.cpu_count()} cores, "
          f"{args.rounds} interleaved rounds (medians)")
    print(f"{'':<34} {'s':>7} {'ms/photo':>9}")
    print(f"{'stages 1–6, plain loop':<34} {b:>7.2f} {1000 * b / n:>9.2f}")
    print(f"{'stages 1–6, process-sets flow':<34} {a:>7.2f} {1000 * a / n:>9.2f}   "
          f"{a / b:.2f}× the plain loop (target ≤ 1.3×)")
    w, c = statistics.median(walls), statistics.median(plain_whole)
    print(f"{'stages 1–9, plain loop':<34} {c:>7.2f} {1000 * c / n:>9.2f}")
    print(f"{'whole process-sets run':<34} {w:>7.2f} {1000 * w / n:>9.2f}   "
          f"{w / c:.2f}× the plain loop (target ≤ 2×; drafts, gate, local publish included)")
    print("\nthe last flow run's task runs (Prefect's records):")
    print_task_runs(home)
    print("\nthe last plain round, by part (s): " + ", ".join(
        f"{name} {seconds:.2f}" for name, seconds in PLAIN_PARTS.items()))
    close_home()


if __name__ == "__main__":
    main()
