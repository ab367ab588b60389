"""Benchmark batch jobs: images/second and peak memory for each preset on N generated
24-megapixel JPEGs, next to a plain Pillow loop doing the same work, in one run.

    .venv/bin/python bench/batch.py [-n 6] [--megapixels 24] [--workers 0]

galleryflow runs the real ``batch-process`` flow (ephemeral Prefect API, SQLite),
so the figures include orchestration, hashing for the rerun cache, the DB writes
and atomic renames. The "plain Pillow" loop is what one would write by hand:
open, ``exif_transpose``, resize/crop, save with the same format and quality, one
file after another (no draft decode, one thread).

Peak memory is the process's resident high-water mark during each run (Linux
``VmHWM``, reset through ``/proc/self/clear_refs`` before each measurement).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pillow_loop(files: list[Path], out: Path, preset: dict) -> None:
    """The same work as the preset, written the obvious way with Pillow."""
    from PIL import Image, ImageOps

    fmt = {"webp": "WEBP", "jpeg": "JPEG", "png": "PNG"}[preset["format"]]
    suffix = {"WEBP": ".webp", "JPEG": ".jpg", "PNG": ".png"}[fmt]
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            width, height = preset.get("width"), preset.get("height")
            if preset.get("fit") == "crop":
                img = ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)
            elif width:
                img = img.resize((width, round(img.height * width / img.width)),
                                 Image.Resampling.LANCZOS)
            kwargs = {"quality": preset["quality"]} if "quality" in preset else {}
            if fmt == "JPEG" and preset["quality"] >= 90:
                kwargs["subsampling"] = 0  # as galleryflow does at high quality
            if fmt == "PNG":
                kwargs = {"compress_level": preset.get("png_compress_level", 6)}
            img.save(out / (path.stem + suffix), fmt, **kwargs)


def child(engine: str, preset_name: str, inputs: Path, out: Path) -> None:
    """One measurement in a fresh process, so the peak is this job's alone (a process
    that ran earlier jobs keeps freed memory resident and would hide its peak)."""
    import json

    import galleryflow  # noqa: F401  (Prefect env defaults)
    from flows.batch import batch_process
    from galleryflow.batch.presets import BUILTIN_PRESETS
    from galleryflow.intake.samples import SampleSpec, write_sample

    files = sorted(inputs.glob("*.jpg"))
    if engine == "galleryflow":
        # Warm-up outside the timing: imports, DB migration, Prefect client.
        warm = out.parent / f"warm-{preset_name}"
        write_sample(warm / "w.jpg", SampleSpec(name="w.jpg", width=320, height=240))
        batch_process(input_pattern=str(warm / "*.jpg"), operation="thumbnail",
                      output_directory=str(warm / "out"))

        def run() -> None:
            batch_process(input_pattern=str(inputs / "*.jpg"), preset=preset_name,
                          output_directory=str(out))
    else:
        def run() -> None:
            pillow_loop(files, out, BUILTIN_PRESETS[preset_name])
    base = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak := now
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"seconds": seconds, "peak": _status_mb("VmHWM"),
                                  "base": base}), flush=True)


def measure(engine: str, preset: str, inputs: Path, out: Path, env: dict) -> dict:
    import json
    import subprocess

    proc = subprocess.run([sys.executable, __file__, "--child", engine, preset, str(inputs),
                           str(out)], env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{engine}/{preset} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=6, help="images (default 6)")
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--workers", type=int, default=0, help="galleryflow chunk threads (0: cores)")
    parser.add_argument("--presets", default="web_optimized,social_media,thumbnail,high_quality")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, preset, inputs, out = args.child
        child(engine, preset, Path(inputs), Path(out))
        return

    work = Path(tempfile.mkdtemp(prefix="gf-bench-batch-"))
    env = dict(os.environ)
    env.update({
        "GALLERYFLOW_HOME": str(work / "home"),
        "GALLERYFLOW_BATCH__WORKERS": str(args.workers),
        "GALLERYFLOW_BATCH__CHUNK_SIZE": "2",  # spread a small N over the threads
        "PREFECT_LOGGING_LEVEL": "WARNING",
    })
    os.environ.update(env)
    import galleryflow  # noqa: F401
    from prefect.server.api.server import SubprocessASGIServer

    from galleryflow.intake.samples import SampleSpec, write_sample

    height = int((args.megapixels * 1e6 / 1.5) ** 0.5)
    width = int(height * 1.5)
    print(f"generating {args.n} JPEGs of {width}×{height} ({width * height / 1e6:.1f} MP)…",
          flush=True)
    inputs = work / "in"
    for i in range(args.n):
        write_sample(inputs / f"img-{i:03d}.jpg",
                     SampleSpec(name=f"img-{i:03d}.jpg", width=width, height=height, seed=i))
    # One Prefect API for every child (a separate process: not in anyone's peak).
    server = SubprocessASGIServer()
    server.start(timeout=180)
    env["PREFECT_API_URL"] = server.api_url
    cores = os.cpu_count() or 1
    rows = []
    try:
        for name in args.presets.split(","):
            gf = measure("galleryflow", name, inputs, work / f"gf-{name}", env)
            pil = measure("pillow", name, inputs, work / f"pil-{name}", env)
            rows.append((name, gf, pil))
            print(f"  {name}: galleryflow {args.n / gf['seconds']:.2f} img/s, Pillow loop "
                  f"{args.n / pil['seconds']:.2f} img/s", flush=True)
            shutil.rmtree(work / f"gf-{name}", ignore_errors=True)
            shutil.rmtree(work / f"pil-{name}", ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{args.n} × {args.megapixels:g}-MP JPEGs, {cores} cores, galleryflow workers = "
          f"{args.workers or cores}; peak = resident high-water mark of the process "
          "(above its size before the job)")
    print()
    print("| preset | galleryflow img/s | peak MB (+job) | plain Pillow img/s | peak MB (+job) "
          "| speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, gf, pil in rows:
        print(f"| {name} | {args.n / gf['seconds']:.2f} | {gf['peak']:.0f} "
              f"(+{gf['peak'] - gf['base']:.0f}) | {args.n / pil['seconds']:.2f} | "
              f"{pil['peak']:.0f} (+{pil['peak'] - pil['base']:.0f}) | "
              f"{pil['seconds'] / gf['seconds']:.1f}× |")


if __name__ == "__main__":
    main()
