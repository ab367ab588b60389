"""Helpers for the stage 5 tests: real weight files built here, odd images, DB rows.

Weights cannot be downloaded here, so the tests build *tiny* ones of the real
formats and load them back through the configured paths:

- an open_clip model from a small ViT config registered the way a user would
  (``scoring.clip_model_config``), random weights saved as a state-dict checkpoint;
- a LAION aesthetic MLP (the published architecture, input = that model's
  embedding size), random weights saved as a state dict;
- a BRISQUE parameter file as pyiqa loads it: ``(sv_coef[N], sv[N, 36])`` saved
  with ``torch.save`` (N = 774, as in the published file; random values).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galleryflow.db import ImageSet, ReviewRow, session_scope
from galleryflow.core.fsutil import sha256_file
from galleryflow.core.settings import Settings, get_settings, reset_settings

TINY_MODEL = "gf-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


def isolate_weight_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point every cache the setup looks in at an empty folder (no stray real weights)."""
    cache = tmp_path / "weight-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache / "xdg"))
    monkeypatch.setenv("GALLERYFLOW_SCORING__CACHE_DIR", str(cache))
    reset_settings()
    return cache


def configure_scoring(monkeypatch: pytest.MonkeyPatch, **values: object) -> Settings:
    """Set ``GALLERYFLOW_SCORING__<NAME>`` variables and return fresh settings."""
    for name, value in values.items():
        monkeypatch.setenv(f"GALLERYFLOW_SCORING__{name.upper()}", str(value))
    reset_settings()
    return get_settings()


def write_tiny_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """(model config JSON, checkpoint) for a random tiny open_clip ViT."""
    import torch

    from galleryflow.torch_compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TINY_MODEL}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_MODEL, pretrained=None)
    checkpoint = folder / f"{TINY_MODEL}-{seed}.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


def write_head(path: Path, input_size: int = TINY_CONFIG["embed_dim"], seed: int = 0) -> Path:
    import torch

    from galleryflow.scoring.models import AestheticMLP

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(AestheticMLP(input_size).state_dict(), path)
    return path


def write_brisque_params(path: Path, seed: int = 0, count: int = 774) -> Path:
    import torch

    generator = torch.Generator().manual_seed(seed)
    sv_coef = torch.randn(count, generator=generator, dtype=torch.float64)
    sv = torch.rand(count, 36, generator=generator, dtype=torch.float64) * 2 - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save((sv_coef, sv), path)
    return path


def tiny_weights(folder: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 0) -> Settings:
    """Build all three weight files and configure scoring to use them."""
    config, checkpoint = write_tiny_clip(folder, seed)
    head = write_head(folder / f"head-{seed}.pth", seed=seed)
    params = write_brisque_params(folder / f"brisque-{seed}.pth", seed=seed)
    return configure_scoring(
        monkeypatch, clip_model=TINY_MODEL, clip_model_config=config, clip_checkpoint=checkpoint,
        aesthetic_head=head, brisque_params=params, batch_size=4,
    )


# --- odd images ---------------------------------------------------------------------------

def _png_rgb16(width: int, height: int, seed: int = 0) -> bytes:
    """A 48-bit RGB PNG (Pillow reads it but cannot write one)."""
    rng = np.random.default_rng(seed)
    rows = b"".join(
        b"\x00" + rng.integers(0, 65535, width * 3, dtype=np.uint16).astype(">u2").tobytes()
        for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def write_odd_images(folder: Path, photo: Path) -> dict[str, str]:
    """Odd files made from a real photo; returns {file name: expected reason fragment}."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.open(photo).convert("RGB").resize((320, 240))
    base.convert("CMYK").save(folder / "cmyk.jpg", "JPEG", quality=90)
    grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(folder / "grey16.png")
    (folder / "rgb16.png").write_bytes(_png_rgb16(160, 120))
    base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / "palette.png")
    base.resize((20, 15)).save(folder / "tiny.jpg", "JPEG")
    data = photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "not-an-image.jpg").write_text("shopping list: film, batteries\n")
    return {
        "cmyk.jpg": "CMYK",
        "grey16.png": "16-bit",
        "rgb16.png": "16-bit",
        "palette.png": "palette",
        "tiny.jpg": "too small",
        "truncated.jpg": "cannot decode",
        "not-an-image.jpg": "cannot decode",
    }


def blurred_copy(photo: Path, dest: Path, radius: float = 4.0) -> Path:
    from PIL import ImageFilter

    Image.open(photo).filter(ImageFilter.GaussianBlur(radius)).save(dest, "JPEG", quality=90)
    return dest


def jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


# --- DB rows ------------------------------------------------------------------------------

def insert_set(files: list[Path], settings: Settings, statuses: dict[str, str] | None = None,
               set_name: str = "test-set") -> tuple[int, list[int]]:
    """An ImageSet and one ReviewRow per file (as stages 1–4 leave them), incoming copies
    under ``incoming/<set>/``; returns (session id, row ids in file order)."""
    statuses = statuses or {}
    incoming = settings.incoming_dir / set_name
    incoming.mkdir(parents=True, exist_ok=True)
    with session_scope() as session:
        image_set = ImageSet(set_key=set_name, name=set_name, source_dir=str(files[0].parent))
        session.add(image_set)
        session.flush()
        rows = []
        for path in files:
            copy = incoming / path.name
            copy.write_bytes(path.read_bytes())
            row = ReviewRow(
                set_key=set_name, original_name=path.name, image_set_id=image_set.id,
                created_session_id=image_set.id, sha256=sha256_file(copy),
                source_path=str(path), incoming_path=str(copy),
                status=statuses.get(path.name, "new"),
            )
            session.add(row)
            rows.append(row)
        session.flush()
        return image_set.id, [row.id for row in rows]


def read_rows(row_ids: list[int]) -> dict[str, ReviewRow]:
    from sqlalchemy import select

    with session_scope() as session:
        rows = session.scalars(select(ReviewRow).where(ReviewRow.id.in_(row_ids))).all()
        for row in rows:
            session.expunge(row)
        return {row.original_name: row for row in rows}
