"""`galleryflow run --approve-all` as a user types it, against a plain reference script.

    .venv/bin/python bench/one_photo.py [--images 1] [--rounds 5] [--megapixels 24]

Sets up a fresh home (offline captioner: no Ollama; the embedded local publish
target, as ``make demo`` has it), starts this home's background Prefect server
(``galleryflow server start``), does one warm-up run (it builds the caches: the
gazetteer pickle, the state DB, the server's flows), then times ``--rounds``
interleaved rounds, each a new subprocess with its start-up included:

- ``galleryflow run SET --approve-all`` on a new set folder holding ``--images``
  24-MP JPEGs (each round's photos are new content: a JPEG comment with the round's
  number is inserted, so no cache of an earlier round applies);
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


def with_comment(data: bytes, text: str) -> bytes:
    """The JPEG ``data`` with a COM segment ``text`` after its APPn segments: new
    bytes (a new sha256), the same pixels and EXIF."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pos = 2
    while data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:  # APP0..APP15
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    payload = text.encode()
    segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:pos] + segment + data[pos:]


def make_round_set(sources: list[Path], folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        (folder / src.name).write_bytes(with_comment(src.read_bytes(), tag))
    return folder


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("ab") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
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
    log = home / "bench.log"
    galleryflow = str(BIN / "galleryflow")
    sets = home / "sets"
    refout = home / "reference-out"
    n = len(sources)
    if n == 1:
        reference = [sys.executable, str(ROOT / "bench" / "_one_photo_ref.py")]
        ref_label = "reference script (read, hash, draft decode, 1024-px JPEG, copy)"
    else:
        reference = [sys.executable, str(ROOT / "bench" / "reference.py"), "--threads", "2"]
        ref_label = "one-decode limit script (bench/reference.py, 2 threads)"
    try:
        timed([galleryflow, "server", "start"], env, log)
        print(f"home {home}; background server started; warm-up run …", flush=True)
        warm = make_round_set(sources, sets / "warm-up", "warm-up")
        timed([galleryflow, "run", str(warm), "--approve-all"], env, log)
        rows: list[tuple[float, float]] = []
        for i in range(args.rounds):
            folder = make_round_set(sources, sets / f"round-{i:02d}", f"round {i}")
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
            print(f"round {i + 1}/{args.rounds}: galleryflow run {gf:6.2f} s   reference {ref:5.2f} s"
                  f"   ({gf / ref:4.1f}×)", flush=True)
        published = len(list((home / "site").rglob("*.jpg"))) if (home / "site").exists() else None
        gf_med = statistics.median(r[0] for r in rows)
        ref_med = statistics.median(r[1] for r in rows)
        print(f"\n{n} × {args.megapixels:g} MP, {args.rounds} rounds, {os.cpu_count()} cores, "
              f"start-up included (subprocess wall)")
        print(f"  galleryflow run --approve-all (background server warm): median {gf_med:.2f} s "
              f"(min {min(r[0] for r in rows):.2f}, max {max(r[0] for r in rows):.2f})")
        print(f"  {ref_label}: median {ref_med:.2f} s")
        print(f"  ratio of the medians: {gf_med / ref_med:.1f}×")
        if published is not None:
            print(f"  files in the site folder: {published}")
    finally:
        subprocess.run([galleryflow, "server", "stop"], env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
