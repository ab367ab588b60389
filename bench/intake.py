"""Benchmark the set pipeline on 24-MP JPEGs: stages 1–4 (validate, intake, EXIF,
review rows) and the per-image work after them (scores, model resize, drafts).

    .venv/bin/python bench/intake.py [--images 12] [--megapixels 24] [--chunk-size 128]
                                     [--rounds 1]

Photos beyond the first 120 are byte variants of those (a JPEG comment added: other
sha256, same pixels), so ``--images 1200`` checks that the per-photo cost stays flat
without drawing 1,200 photos (~2.4 s each); it needs ~7 GB for the photos and as
much again for the home.

Generates N textured JPEGs with EXIF (cached under the bench work folder), runs
the real ``process-sets`` flow (Prefect's embedded server) twice — a cold run
and a rerun that should copy and read nothing twice — and prints images/second
per stage and the process's peak resident memory. ``--rounds R`` makes R cold
runs, each on a set of its own (byte variants of the first: new photos to every
stage and cache, the same pixels), before the rerun of the first, and compares
their median with the reference: one run of a 12-photo set varies by ±5 %; later
rounds also show what a run leaves behind in its process. Scores use the fallback (no
weights here) and drafts the offline captioner (no Ollama here), so the figures
for those stages are image decoding and statistics, not model time; the review
gate is answered through the API as `--approve-all` does, then the approved rows
are published to a local folder.

It also prints, per run, how many times each photo was decoded and hashed, by
stage and call path (``galleryflow.imaging.decode.DECODES`` and
``galleryflow.core.fsutil.HASHES``): the pipeline's target for stages 1–6 is one
decode (stages 5 and 6 share it; validation checks a JPEG's structure without
decoding it) and one hash, and each total says whether it is met. Before stages 5
and 6 shared a decode and the copy check stopped re-reading the copy, a cold run
took 3 decodes and 3 hashes per photo, and a rerun 1 decode and 2 hashes; until
validation stopped decoding JPEGs, 2 decodes and 1 hash. (The review page's
thumbnails decode the 1024-px model image, not the photo: listed as "other".)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# Photos drawn afresh; beyond these, byte variants of them (see _variant).
DRAWN = 120


def _generate(folder: Path, count: int, megapixels: float) -> None:
    from galleryflow.intake.samples import CAMERAS, SampleSpec, write_sample

    height = int((megapixels * 1e6 / 1.5) ** 0.5)
    width = int(height * 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(count, DRAWN)):
        path = folder / f"bench-{i:04d}.jpg"
        if not path.exists():
            write_sample(path, SampleSpec(name=path.name, width=width, height=height,
                                          taken_at=datetime(2026, 6, 1, 6) + timedelta(minutes=13 * i),
                                          camera=CAMERAS[i % 4], seed=i, gps=(45.0, 7.0, 300.0)))
    for i in range(DRAWN, count):
        path = folder / f"bench-{i:04d}.jpg"
        if not path.exists():
            _variant(folder / f"bench-{i % DRAWN:04d}.jpg", path, i)


def _variant(source: Path, target: Path, number: int) -> None:
    """``source`` with a JPEG comment naming ``number`` after its EXIF segment: other
    bytes (another sha256, so another photo to every stage and cache), the same pixels
    to decode, written in milliseconds. Drawing a 24-MP photo takes ~2.4 s, so 1,200
    of them would take most of an hour; the flatness check needs the count, not new
    pixels. (Their near-duplicate pHashes only group them on the review page.)"""
    data = source.read_bytes()
    at = 2  # after SOI; then after an APP1 (EXIF must stay the first segment)
    if data[2:4] == b"\xff\xe1":
        at = 4 + int.from_bytes(data[4:6], "big")
    text = f"galleryflow bench variant {number}".encode()
    comment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    partial = target.with_suffix(".part")
    partial.write_bytes(data[:at] + comment + data[at:])
    os.replace(partial, target)


def _variant_set(folder: Path, target: Path, round_: int) -> Path:
    """A copy of the set ``folder`` whose every photo is a byte variant (see _variant):
    a set of new photos for a further cold run, made in milliseconds."""
    target.mkdir(exist_ok=True)
    for source in sorted(folder.glob("*.jpg")):
        if not (target / source.name).exists():
            _variant(source, target / source.name, 1_000_000 * round_ + int(source.stem[-4:]))
    return target


# Which stage a call path belongs to, by the module that asked.
STAGES = [
    ("tasks.validate", "1 validate"), ("tasks.intake", "2 intake"), ("tasks.exif", "3 exif"),
    ("tasks.review_rows", "4 review rows"), ("tasks.scoring", "5 scoring"),
    ("tasks.score_and_resize", "5 scoring"),
    ("tasks.model_resize", "6 model resize"), ("tasks.captioning", "7 captioning"),
    ("galleryflow.captioning", "7 captioning"), ("tasks.publish", "9 publish"),
    ("galleryflow.publishing", "9 publish"),
]


def _stage(path: str) -> str:
    module = path.split(" › ", 1)[0]
    return next((label for prefix, label in STAGES if module.startswith(prefix)), "other")


def count_work() -> tuple:  # type: ignore[type-arg]
    """The decode and hash tallies (every decode and full hash of a photo goes through them)."""
    from galleryflow.core.fsutil import HASHES
    from galleryflow.imaging.decode import DECODES

    return DECODES, HASHES


# The pipeline's target for stages 1–6, per photo: one shared reduced decode
# (stages 5-6) and one full hash (intake's, while copying).
TARGET = {"decode": 1, "hash": 1}


def print_work(label: str, n: int, decodes: dict[str, int], hashes: dict[str, int]) -> None:
    """Decodes and hashes per photo: each call path, then the total of stages 1–6."""
    print(f"\n{label}: decodes and hashes per photo ({n} photos)")
    rows = sorted([(_stage(k), "decode", k, v) for k, v in decodes.items()]
                  + [(_stage(k), "hash", k, v) for k, v in hashes.items()])
    for stage, kind, key, count in rows:
        print(f"  {stage:<15} {kind:<7} {count / n:5.2f}  {key}")
    early = [r for r in rows if r[0][0] in "123456"]
    for kind in ("decode", "hash"):
        total = sum(r[3] for r in early if r[1] == kind) / n
        verdict = "within" if total <= TARGET[kind] else "OVER"
        print(f"  stages 1–6: {total:.2f} {kind}{'es' if kind == 'hash' else 's'} per photo "
              f"({verdict} the target of {TARGET[kind]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1,
                        help="cold runs, each on its own set (byte variants), then the rerun")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "galleryflow-bench")
    args = parser.parse_args()

    sets = args.workdir / f"sets-{args.megapixels:g}mp"
    pool = sets / "bench-set"  # every photo generated so far; a run's set links the first N
    print(f"generating {args.images} × {args.megapixels:g} MP JPEGs in {pool} (cached) …", flush=True)
    # In a child process, so that generating the pixels does not count in our peak memory.
    from multiprocessing import get_context

    child = get_context("spawn").Process(target=_generate, args=(pool, args.images, args.megapixels))
    child.start()
    child.join()
    # The set is exactly N photos (hard links: no copy, the same bytes).
    folder = sets / f"set-{args.images}"
    folder.mkdir(exist_ok=True)
    for source in sorted(pool.glob("*.jpg"))[: args.images]:
        if not (folder / source.name).exists():
            os.link(source, folder / source.name)
    folders = [folder] + [_variant_set(folder, sets / f"set-{args.images}-r{k}", k)
                          for k in range(1, args.rounds)]
    # The sets just written (~0.7 GB a 120-photo round) are written back to disk now,
    # not during the timed runs.
    os.sync()
    home = Path(tempfile.mkdtemp(prefix="home-", dir=args.workdir))
    from bench._harness import close_home, open_home, quiet_server

    process_sets = open_home(home, args.chunk_size)
    from bench.reference import one_decode_limit

    files = sorted(folder.glob("*.jpg"))[: args.images]
    # The reference before and after the runs, the best of all: measured only after them
    # it once took 9.97 s against 7.2 s alone (what the server still did after a run).
    limits = [one_decode_limit(files, os.cpu_count() or 2)]
    decodes, hashes = count_work()
    rows = []
    work = []
    runs = [(f"cold run {k + 1}" if args.rounds > 1 else "cold run", f) for k, f in enumerate(folders)]
    waited = []
    for label, run_folder in runs + [("rerun", folder)]:
        os.sync()  # the last run's unsynced writes (web and model images) written back now
        waited.append(quiet_server())
        decodes.reset()
        hashes.reset()
        start = time.perf_counter()
        summary = process_sets([str(run_folder)])
        wall = time.perf_counter() - start
        work.append((label, decodes.snapshot(), hashes.snapshot()))
        stages = dict(summary.sets[0].stage_seconds)
        published = len(summary.publish.published) if summary.publish else 0
        rows.append((f"{label}", wall, stages))
        print(f"{label}: {published} published", flush=True)
    print(f"before each run, the server was left to finish the last one's records: "
          f"{', '.join(f'{w:.1f}' for w in waited)} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.images
    print(f"\n{n} images of {args.megapixels:g} MP, chunk size {args.chunk_size}, {os.cpu_count()} cores")
    print("wall: the whole run, gate and publish included; then each stage alone")
    print(f"{'run':<12} {'wall s':>7} {'img/s':>7}   " + "  ".join(f"{s:>16}" for s in rows[0][2]))
    for label, wall, stages in rows:
        per_stage = "  ".join(f"{n / v:>9.1f} img/s" if v >= 1e-3 else f"{'nothing done':>16}"
                              for v in stages.values())
        print(f"{label:<12} {wall:>7.2f} {n / wall:>7.1f}   {per_stage}")
    print(f"peak RSS of this process: {peak_mb:.0f} MB")
    source_mb = sum(f.stat().st_size for f in folder.glob("*.jpg")) / 1e6
    home_mb = sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / 1e6
    print(f"disk: the photos {source_mb:.0f} MB{f' (×{args.rounds} sets)' if args.rounds > 1 else ''}; "
          f"the home after the runs {home_mb:.0f} MB "
          "(incoming copies, the published site, Prefect's DB and results); stage 2 keeps "
          "~0.5 MB of scoring input per photo until stage 5 takes it")
    for label, decoded, hashed in (work[0], work[-1]):
        print_work(label, n, decoded, hashed)
    from bench.pending import print_gaps, print_task_runs, stage_spans

    print_gaps(home, "all runs: ")
    print(f"\n{runs[-1][0]}: where the time goes, by kind of task run (Prefect's records)")
    print_task_runs(home, runs_back=2)
    quiet_server()
    limits += [one_decode_limit(files, os.cpu_count() or 2) for _ in range(2)]
    limit = min(limits)
    print(f"\nstages 1–6 against the one-decode limit (bench/reference.py, same photos, "
          f"{os.cpu_count()} threads, best of {len(limits)}: {limit:.2f} s = {n / limit:.1f} "
          f"img/s; before the runs {limits[0]:.2f} s, after them "
          f"{', '.join(f'{v:.2f}' for v in limits[1:])} s)")
    spans = stage_spans(home)
    for (label, *_), span in zip(rows, spans):
        print(f"  {label:<12} {span:6.2f} s = {n / span:6.1f} img/s: {100 * limit / span:5.1f} % "
              f"of the limit, {1000 * span / n:5.1f} ms a photo")
    if args.rounds > 1:
        cold = statistics.median(spans[: args.rounds])
        print(f"  {'median cold':<12} {cold:6.2f} s = {n / cold:6.1f} img/s: {100 * limit / cold:5.1f} % "
              f"of the limit, {1000 * cold / n:5.1f} ms a photo (the limit: {1000 * limit / n:.1f})")
    close_home()


if __name__ == "__main__":
    main()
