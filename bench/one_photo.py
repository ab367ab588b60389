"""`galleryflow run --approve-all` as a user types it, against a plain reference script.

    .venv/bin/python bench/one_photo.py [--images 1] [--rounds 5] [--megapixels 24]

Sets up a fresh home (offline captioner: no Ollama; the embedded local publish
target, as ``make demo`` has it), starts this home's background Prefect server
(``galleryflow server start``), does one warm-up run (it builds the caches: the
gazetteer pickle, the state DB, the server's flows; it starts cold and leaves the
warm process for runs behind, ``galleryflow.app.warm``: its time is printed as the
cold one), then times ``--rounds`` interleaved rounds, each a new subprocess with
its start-up included (a small client handing the run to the warm process):

- ``galleryflow run SET --approve-all`` on a new set folder holding ``--images``
  24-MP JPEGs, each round a new shoot (same pixels; each photo's EXIF GPS moved to
  a town of its own, the date a week on, a JPEG comment added): new bytes, so no cache of an
  earlier round applies, and new captions, which the guardrails would otherwise
  block as duplicates of the published ones (then nothing would be published);
- the reference on the same photos: with one photo, a plain script doing the
  minimum (read, hash, draft decode, the 1024-px JPEG, copy to a folder,
  ``bench/_one_photo_ref.py``); with more, the one-decode limit script
  (``bench/reference.py``: read, hash, draft decode, 512-px and 1024-px images; two
  threads).

Prints each round, the medians and the ratio of the medians (issue 14's targets:
one photo ≤ 5 s; 48 photos ≤ 4× the one-decode limit script). The server is
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from bench._harness import stop_warm, wait_warm  # noqa: E402


# Where each photo was taken: a grid over central Europe, one point per photo of the
# bench (the town nearest each point names it). New photos get new captions, as real
# ones would: the offline captioner's stand-in captions of 48 photos from one spot
# would repeat each other and a later round's the published ones; the guardrails
# block a repeat, and one blocked row holds its whole set back from the publish.
def place(k: int) -> tuple[float, float]:
    return 43.5 + 0.37 * (k % 23), -1.0 + 0.53 * ((k // 23) % 37)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return (float(degrees), float(minutes), round(((value - degrees) * 60 - minutes) * 60, 2))


def new_shoot(data: bytes, shoot: int, tag: str, k: int = 0) -> bytes:
    """The JPEG ``data`` as another photo of shoot ``shoot``: its EXIF GPS moved to
    :func:`place` ``(k)`` and its date ``shoot`` weeks later (the APP1 segment replaced, the
    pixels untouched), plus a COM segment ``tag``: new bytes (a new sha256), new
    captions."""
    import io
    from datetime import datetime, timedelta

    from PIL import Image

    assert data[:2] == b"\xff\xd8", "not a JPEG"
    exif = Image.open(io.BytesIO(data)).getexif()
    lat, lon = place(k)
    gps = exif.get_ifd(0x8825)
    if gps:
        gps.update({1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W",
                    4: _dms(lon)})
    facts = exif.get_ifd(0x8769)
    if 36867 in facts:
        taken = datetime.strptime(facts[36867], "%Y:%m:%d %H:%M:%S") + timedelta(weeks=shoot)
        facts[36867] = facts[36868] = taken.strftime("%Y:%m:%d %H:%M:%S")
    app1 = exif.tobytes()
    payload = tag.encode()
    head, pos = [data[:2]], 2
    while data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:  # APP0..APP15
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            head.append(b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1)
        else:
            head.append(data[pos:end])
        pos = end
    head.append(b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload)
    return b"".join(head) + data[pos:]


def make_round_set(sources: list[Path], folder: Path, tag: str, shoot: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(sources):
        k = shoot * len(sources) + i
        (folder / src.name).write_bytes(new_shoot(src.read_bytes(), shoot, tag, k))
    return folder


def timed(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    with log.open("ab") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}); see {log}")
    return wall


def home_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GALLERYFLOW_"))}
    env.update(GALLERYFLOW_HOME=str(home), COLUMNS="200",
               GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED="true",
               GALLERYFLOW_OLLAMA__HOST="http://127.0.0.1:9",  # nothing listens: offline drafts
               GALLERYFLOW_OLLAMA__CONNECT_TIMEOUT_SECONDS="0.5")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "galleryflow-bench")
    parser.add_argument("--keep-home", action="store_true", help="Leave the home (and its server log).")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="A checkout of an earlier galleryflow (e.g. a worktree of main): timed "
                             "in the same rounds, in a home, server and warm process of its own, "
                             "run by this interpreter with the checkout first on PYTHONPATH "
                             "(a checkout with galleryflow.app.warm).")
    args = parser.parse_args()

    sources_dir = args.workdir / f"sets-{args.megapixels:g}mp" / "bench-set"
    print(f"generating {args.images} × {args.megapixels:g} MP JPEGs in {sources_dir} (cached) …",
          flush=True)
    # The generator's pixels in a child process (numpy arrays of 24 MP each).
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                    "from bench.intake import _generate; from pathlib import Path; "
                    "_generate(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))",
                    str(ROOT), str(sources_dir), str(args.images), str(args.megapixels)], check=True)
    sources = sorted(sources_dir.glob("*.jpg"))[: args.images]
    home = Path(tempfile.mkdtemp(prefix="home-one-", dir=args.workdir))
    env = home_env(home)
    runtime = home / "runtime"  # this bench's own warm process
    runtime.mkdir(mode=0o700)
    env["GALLERYFLOW_RUNTIME_DIR"] = str(runtime)
    log = home / "bench.log"
    galleryflow = str(BIN / "galleryflow")
    sets = home / "sets"
    refout = home / "reference-out"
    n = len(sources)
    base_home = Path(tempfile.mkdtemp(prefix="home-base-", dir=args.workdir)) if args.baseline else None
    base_env = {**home_env(base_home), "PYTHONPATH": str(args.baseline)} if base_home else {}
    base_runtime = base_home / "runtime" if base_home else runtime
    if base_home is not None:  # the baseline's own warm process, as a user of it would have
        base_runtime.mkdir(mode=0o700)
        base_env["GALLERYFLOW_RUNTIME_DIR"] = str(base_runtime)
    base_log = base_home / "bench.log" if base_home else log
    # Run from the checkout: the interpreter puts the working directory first on sys.path.
    # The console script's entry (a warm process when there is one), from the checkout.
    base_cli = [sys.executable, "-c", "from galleryflow.app.warm import main; main()"]
    if n == 1:
        reference = [sys.executable, str(ROOT / "bench" / "_one_photo_ref.py")]
        ref_label = "reference script (read, hash, draft decode, 1024-px JPEG, copy)"
    else:
        reference = [sys.executable, str(ROOT / "bench" / "reference.py"), "--threads", "2"]
        ref_label = "one-decode limit script (bench/reference.py, 2 threads)"
    try:
        timed([galleryflow, "server", "start"], env, log)
        print(f"home {home}; background server started; warm-up run …", flush=True)
        warm = make_round_set(sources, sets / "warm-up", "warm-up", shoot=0)
        cold = timed([galleryflow, "run", str(warm), "--approve-all"], env, log)
        print(f"warm-up run (cold: no warm process yet) {cold:.2f} s", flush=True)
        wait_warm(runtime, "run")
        if base_home is not None:
            timed(base_cli + ["server", "start"], base_env, base_log, args.baseline)
            print(f"baseline {args.baseline}: home {base_home}; warm-up run …", flush=True)
            timed(base_cli + ["run", str(warm), "--approve-all"], base_env, base_log, args.baseline)
            wait_warm(base_runtime, "run")
        rows: list[tuple[float, float]] = []
        base_rows: list[float] = []
        for i in range(args.rounds):
            folder = make_round_set(sources, sets / f"round-{i:02d}", f"round {i}", shoot=i + 1)
            ref_cmd = reference + ([str(folder / sources[0].name), str(refout / f"{i:02d}")]
                                   if n == 1 else [str(folder)])
            gf_cmd = [galleryflow, "run", str(folder), "--approve-all"]
            # Interleaved, alternating which goes first.
            if i % 2:
                gf = timed(gf_cmd, env, log)
                ref = timed(ref_cmd, env, log)
            else:
                ref = timed(ref_cmd, env, log)
                gf = timed(gf_cmd, env, log)
            rows.append((gf, ref))
            line = (f"round {i + 1}/{args.rounds}: galleryflow run {gf:6.2f} s   reference {ref:5.2f} s"
                    f"   ({gf / ref:4.1f}×)")
            if base_home is not None:
                again = make_round_set(sources, sets / f"base-{i:02d}", f"baseline {i}", shoot=i + 1)
                base = timed(base_cli + ["run", str(again), "--approve-all"], base_env, base_log,
                             args.baseline)
                base_rows.append(base)
                line += f"   baseline {base:6.2f} s ({base / ref:4.1f}×)"
            print(line, flush=True)
        published = len(list((home / "site").rglob("*.jpg"))) if (home / "site").exists() else None
        gf_med = statistics.median(r[0] for r in rows)
        ref_med = statistics.median(r[1] for r in rows)
        print(f"\n{n} × {args.megapixels:g} MP, {args.rounds} rounds, {os.cpu_count()} cores, "
              f"start-up included (subprocess wall)")
        print(f"  galleryflow run --approve-all (background server warm): median {gf_med:.2f} s "
              f"(min {min(r[0] for r in rows):.2f}, max {max(r[0] for r in rows):.2f})")
        print(f"  {ref_label}: median {ref_med:.2f} s")
        print(f"  ratio of the medians: {gf_med / ref_med:.1f}×")
        if base_rows:
            base_med = statistics.median(base_rows)
            print(f"  baseline ({args.baseline}): median {base_med:.2f} s, {base_med / ref_med:.1f}× "
                  "the reference")
        if published is not None:
            print(f"  files in the site folder: {published}")
    finally:
        subprocess.run([galleryflow, "server", "stop"], env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop_warm(runtime)
        if base_home is not None:
            subprocess.run(base_cli + ["server", "stop"], env=base_env, cwd=args.baseline,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stop_warm(base_runtime)
            if not args.keep_home:
                shutil.rmtree(base_home, ignore_errors=True)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
