"""Benchmark the set pipeline on 24-MP JPEGs: stages 1–4 (validate, intake, EXIF,
review rows) and the per-image work after them (scores, model resize, drafts).

    .venv/bin/python bench/intake.py [--images 12] [--megapixels 24] [--chunk-size 64]

Generates N textured JPEGs with EXIF (cached under the bench work folder), runs
the real ``process-sets`` flow (Prefect's embedded server) twice — a cold run
and a rerun that should copy and read nothing twice — and prints images/second
per stage and the process's peak resident memory. Scores use the fallback (no
weights here) and drafts the offline captioner (no Ollama here), so the figures
for those stages are image decoding and statistics, not model time; the review
gate is answered through the API as `--approve-all` does, then the approved rows
are published to a local folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _generate(folder: Path, count: int, megapixels: float) -> None:
    from galleryflow.intake.samples import CAMERAS, SampleSpec, write_sample

    height = int((megapixels * 1e6 / 1.5) ** 0.5)
    width = int(height * 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"bench-{i:04d}.jpg"
        if not path.exists():
            write_sample(path, SampleSpec(name=path.name, width=width, height=height,
                                          taken_at=datetime(2026, 6, 1, 6) + timedelta(minutes=13 * i),
                                          camera=CAMERAS[i % 4], seed=i, gps=(45.0, 7.0, 300.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "galleryflow-bench")
    args = parser.parse_args()

    sets = args.workdir / f"sets-{args.megapixels:g}mp"
    folder = sets / "bench-set"
    print(f"generating {args.images} × {args.megapixels:g} MP JPEGs in {folder} (cached) …", flush=True)
    # In a child process, so that generating the pixels does not count in our peak memory.
    from multiprocessing import get_context

    child = get_context("spawn").Process(target=_generate, args=(folder, args.images, args.megapixels))
    child.start()
    child.join()
    home = Path(tempfile.mkdtemp(prefix="home-", dir=args.workdir))
    os.environ["GALLERYFLOW_HOME"] = str(home)
    os.environ["GALLERYFLOW_CHUNK_SIZE"] = str(args.chunk_size)
    os.environ["GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED"] = "true"
    os.environ["GALLERYFLOW_OLLAMA__HOST"] = "http://127.0.0.1:9"  # nothing listens: offline drafts
    os.environ["GALLERYFLOW_OLLAMA__CONNECT_TIMEOUT_SECONDS"] = "0.5"
    os.environ["GALLERYFLOW_REVIEW__POLL_INTERVAL_SECONDS"] = "0.5"

    import logging

    import galleryflow  # noqa: F401
    from flows.gate import add_gate_listener
    from flows.process_sets import process_sets
    from galleryflow.review.answer import auto_approver

    from prefect import flow

    logging.getLogger("prefect").setLevel(logging.WARNING)

    @flow
    def warm_up() -> None:
        """Start Prefect's embedded server outside the timed runs."""

    warm_up()
    add_gate_listener(auto_approver("bench"))
    rows = []
    for label in ("cold run", "rerun"):
        start = time.perf_counter()
        summary = process_sets([str(folder)])
        wall = time.perf_counter() - start
        stages = dict(summary.sets[0].stage_seconds)
        published = len(summary.publish.published) if summary.publish else 0
        rows.append((f"{label}", wall, stages))
        print(f"{label}: {published} published", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.images
    print(f"\n{n} images of {args.megapixels:g} MP, chunk size {args.chunk_size}, {os.cpu_count()} cores")
    print("wall: the whole run, gate and publish included; then each stage alone")
    print(f"{'run':<10} {'wall s':>7} {'img/s':>7}   " + "  ".join(f"{s:>16}" for s in rows[0][2]))
    for label, wall, stages in rows:
        per_stage = "  ".join(f"{n / v:>9.1f} img/s" if v >= 1e-3 else f"{'nothing done':>16}"
                              for v in stages.values())
        print(f"{label:<10} {wall:>7.2f} {n / wall:>7.1f}   {per_stage}")
    print(f"peak RSS of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
