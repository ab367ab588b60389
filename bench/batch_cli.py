"""What a user sees: `galleryflow batch process` from the command line, start-up included,
beside a two-thread Pillow script with draft decoding doing the same work, in one run.

    .venv/bin/python bench/batch_cli.py [-n 16] [--megapixels 24] [--rounds 3]

For each of the ``thumbnail`` and ``web_optimized`` presets, the two are run in
turn (``--rounds`` times, interleaved; medians printed): the command as a user
types it, into a fresh output folder, timed from the shell's point of view
(process start to exit: imports, the job check, the detached worker, every
output written and recorded); and the reference, a plain script that opens each
file, asks libjpeg for the smallest draft that still covers the output, fits or
crops it with Lanczos and saves it, on two threads (``bench/pillow_batch.py``),
timed twice: in this process (the work only) and as a script of its own, start-up
included like the command's. The ratio to the script is the target of the
performance issue (≤ 1.25×); the ratio to the in-process work is printed beside it.

The rounds are warm: the first batch command of a session leaves a process with
the batch commands loaded behind it (``galleryflow.app.warm``, for
``ops.warm_minutes``), and the commands after it are handed to that. The first,
cold command (no warm process: Python imports everything itself) is timed on its
own line, once per preset, in a runtime folder of this bench's own.
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

from bench._harness import stop_warm, wait_warm  # noqa: E402
from bench.pillow_batch import PRESETS, reference  # noqa: E402


def reference_script(files: list[Path], out: Path, preset: str) -> float:
    """The same reference as a script of its own: start-up (interpreter, Pillow) included."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "bench" / "pillow_batch.py"), preset, str(out),
                    *map(str, files)], check=True)
    return time.perf_counter() - start


def cli(folder: Path, out: Path, preset: str, env: dict[str, str]) -> float:
    galleryflow = str(Path(sys.executable).with_name("galleryflow"))
    start = time.perf_counter()
    done = subprocess.run([galleryflow, "batch", "process", "--input", str(folder / "*.jpg"),
                           "--preset", preset, "--output", str(out)],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"galleryflow batch process failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "galleryflow-bench")
    args = parser.parse_args()

    from bench.intake import _generate

    folder = args.workdir / f"batch-{args.megapixels:g}mp-{args.n}"
    _generate(folder, args.n, args.megapixels)
    files = sorted(folder.glob("*.jpg"))[: args.n]
    home = Path(tempfile.mkdtemp(prefix="home-", dir=args.workdir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALLERYFLOW_")}
    env["GALLERYFLOW_HOME"] = str(home)
    runtime = Path(tempfile.mkdtemp(prefix="runtime-", dir=args.workdir))
    env["GALLERYFLOW_RUNTIME_DIR"] = str(runtime)  # this bench's own warm process
    print(f"{len(files)} × {args.megapixels:g} MP JPEGs, {os.cpu_count()} cores, "
          f"{args.rounds} interleaved rounds (medians)")
    print(f"{'preset':<14} {'galleryflow CLI':>16} {'Pillow script':>14} {'Pillow in-process':>18}"
          f" {'vs script':>10} {'vs in-process':>14}")
    cold: dict[str, float] = {}
    for preset in PRESETS:
        stop_warm(runtime)
        out = args.workdir / "out"
        shutil.rmtree(out, ignore_errors=True)
        cold[preset] = cli(folder, out / f"gf-{preset}-cold", preset, env)
        wait_warm(runtime, "batch")
        ours, script, inproc = [], [], []
        for round_ in range(args.rounds):
            out = args.workdir / "out"
            shutil.rmtree(out, ignore_errors=True)
            ours.append(cli(folder, out / f"gf-{preset}-{round_}", preset, env))
            script.append(reference_script(files, out / f"script-{preset}-{round_}", preset))
            inproc.append(reference(files, out / f"ref-{preset}-{round_}", preset))
        a, b, c = (statistics.median(x) for x in (ours, script, inproc))
        print(f"{preset:<14} {a:>8.2f} s {len(files) / a:>5.1f}/s {b:>12.2f} s {c:>16.2f} s"
              f" {a / b:>9.2f}× {a / c:>13.2f}×")
        a = cold[preset]
        print(f"{'  cold, first':<14} {a:>8.2f} s {len(files) / a:>5.1f}/s {'':>14} {'':>18}"
              f" {a / b:>9.2f}× {a / c:>13.2f}×")
    stop_warm(runtime)


if __name__ == "__main__":
    main()
