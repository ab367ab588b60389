"""Stage 5 speed on this machine: images/second per scoring path.

Measures, on generated sample JPEGs:

- the fallback path end to end (read + sha256 check + one draft decode + stats +
  pHash; no weights): what every image costs whatever the models;
- pyiqa BRISQUE per image at the analysis size (random SVM parameters: the
  compute is the same as with the published ones);
- open_clip image tower + LAION head, batch 1 and batch 16, for ViT-B-32 and
  ViT-L-14 with random weights (``pretrained=None``: same compute as trained ones),
  on the model's own 224-px preprocessing.

The default run is short (a few images per row); ``--images`` and ``--models``
make it longer. Timings exclude model loading and a warm-up batch. Nothing here
is asserted: it prints a table (and ``--json`` for the numbers).

    .venv/bin/python bench/scoring.py
    .venv/bin/python bench/scoring.py --images 64 --megapixels 24 --models ViT-B-32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from galleryflow.core.fsutil import FileStamp, sha256_file  # noqa: E402
from galleryflow.imaging.decode import open_reduced  # noqa: E402
from galleryflow.intake.samples import SampleSpec, write_sample  # noqa: E402
from galleryflow.core.settings import ScoringSettings, Settings  # noqa: E402


def make_images(folder: Path, count: int, megapixels: float) -> list[Path]:
    height = int((megapixels * 1_000_000 / 1.5) ** 0.5)
    width = int(height * 1.5)
    return [
        write_sample(folder / f"bench-{i:03d}.jpg",
                     SampleSpec(name=f"bench-{i:03d}.jpg", width=width, height=height, seed=i))
        for i in range(count)
    ]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_fallback(paths: list[Path], cache_dir: Path, threads: int) -> float:
    from tasks.scoring import ScoreInput, score_images, scoring_setup

    settings = Settings(scoring=ScoringSettings(cache_dir=cache_dir, clip_model="ViT-B-32",
                                                clip_pretrained="none"))
    setup = scoring_setup(settings)
    assert not setup.brisque_available and not setup.aesthetic_available, "weights were found"
    # As the pipeline gives them: the sha256 intake computed, and the stamp it recorded.
    items = [ScoreInput(sha256=sha256_file(p), path=p, stamp=FileStamp.of(p)) for p in paths]
    score_images(items[:1], setup, threads)  # warm-up
    start = time.perf_counter()
    score_images(items, setup, threads)
    return rate(len(items), time.perf_counter() - start)


def bench_brisque(paths: list[Path], long_edge: int) -> float:
    import numpy as np

    from galleryflow.torch_compat import ensure_torchvision

    ensure_torchvision()
    import pyiqa
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "brisque_svm_weights.pth"
        generator = torch.Generator().manual_seed(0)
        torch.save((torch.randn(774, generator=generator, dtype=torch.float64),
                    torch.rand(774, 36, generator=generator, dtype=torch.float64) * 2 - 1), params)
        metric = pyiqa.create_metric("brisque", device="cpu", pretrained_model_path=str(params))
    tensors = [
        torch.from_numpy(np.asarray(open_reduced(p, long_edge), dtype=np.float32) / 255)
        .permute(2, 0, 1)[None] for p in paths
    ]
    with torch.inference_mode():
        metric(tensors[0])
        start = time.perf_counter()
        for tensor in tensors:
            metric(tensor)
    return rate(len(tensors), time.perf_counter() - start)


def bench_clip(model_name: str, paths: list[Path], batch: int, count: int,
               long_edge: int) -> float:
    from galleryflow.torch_compat import ensure_torchvision

    ensure_torchvision()
    import open_clip
    import torch

    from galleryflow.scoring.models import AestheticMLP

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
    model.eval()
    head = AestheticMLP(model.visual.output_dim).eval()
    pixels = [preprocess(open_reduced(p, long_edge)) for p in paths]
    inputs = [pixels[i % len(pixels)] for i in range(count)]

    def run(chunk: list[torch.Tensor]) -> None:
        embedding = model.encode_image(torch.stack(chunk))
        head(embedding / embedding.norm(dim=-1, keepdim=True))

    with torch.inference_mode():
        run(inputs[:batch])  # warm-up
        start = time.perf_counter()
        for i in range(0, count, batch):
            run(inputs[i : i + batch])
    return rate(count, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8,
                        help="images per row (batch-16 rows use at least one full batch)")
    parser.add_argument("--megapixels", type=float, default=6.0, help="size of the sample JPEGs")
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--l14-images", type=int, default=4,
                        help="images per ViT-L-14 row (it is ~10x slower; batch 16 still "
                        "runs one full batch)")
    parser.add_argument("--threads", type=int, default=4, help="decode threads for the fallback row")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = parser.parse_args()

    import logging

    import torch

    # open_clip warns (on the root logger) that random weights are random: they are meant to be.
    logging.getLogger().setLevel(logging.ERROR)
    long_edge = ScoringSettings().analysis_long_edge
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_images(folder / "set", args.images, args.megapixels)
        (folder / "empty-cache").mkdir()
        rows.append(("fallback (decode + stats + pHash)", "-",
                     bench_fallback(paths, folder / "empty-cache", args.threads)))
        rows.append((f"pyiqa BRISQUE @{long_edge}px", "1", bench_brisque(paths, long_edge)))
        for model in args.models:
            count = args.images
            if model == "ViT-L-14" and args.l14_images:
                count = args.l14_images
            for batch in args.batches:
                n = max(count, batch)
                rows.append((f"open_clip {model} + LAION head", str(batch),
                             bench_clip(model, paths, batch, n, long_edge)))

    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load:.1f} on {os.cpu_count()} cores; "
          f"{args.images} sample JPEGs of {args.megapixels:g} MP, analysis long edge {long_edge}px")
    width = max(len(r[0]) for r in rows)
    print(f"| {'path'.ljust(width)} | batch | images/s |")
    print(f"|{'-' * (width + 2)}|-------|----------|")
    for name, batch, value in rows:
        print(f"| {name.ljust(width)} | {batch:>5} | {value:8.2f} |")
    if args.json:
        print(json.dumps([{"path": n, "batch": b, "images_per_second": v} for n, b, v in rows]))


if __name__ == "__main__":
    main()
