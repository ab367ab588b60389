"""Stage 5's setup: which weights are used, their identity, the device.

Nothing here imports torch: resolving the setup (and describing it) works on an
install without the ``ai`` extra, where every model score takes the fallback.

Weights are looked up, in order:

1. the configured path (``scoring.clip_checkpoint``, ``scoring.aesthetic_head``,
   ``scoring.brisque_params``); a configured path that does not exist is a
   fallback with a reason naming it, never a silent search elsewhere;
2. the libraries' own caches: ``scoring.cache_dir`` if set, open_clip's
   (Hugging Face hub cache and ``~/.cache/clip``), pyiqa's
   (``<torch hub dir>/pyiqa``);
3. a download, only when ``scoring.allow_download`` is set.

The *identity* of the setup (model names plus the sha256 of every weight file,
never their paths) goes into the cache key of the scoring task: a rerun with the
same weights reuses the scores, new weights recompute them, and moving a file
changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from galleryflow.imaging.stats import FALLBACK_VERSION, STATS_VERSION
from galleryflow.core.settings import ScoringSettings

_log = logging.getLogger(__name__)

# Bump when the scoring code changes what it produces for the same inputs.
# v2: the analysed copy is derived from the decode shared with the model-ready image
# (decode_long_edge, 1024 px by default), no longer decoded at 512 px itself.
SCORING_VERSION = "scoring-v2"
SOURCE_MAX = 255  # the *_source columns are VARCHAR(255)

BRISQUE_FILE = "brisque_svm_weights.pth"
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
AESTHETIC_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/" + AESTHETIC_FILE
)


class WeightFile(BaseModel):
    """A weight file found on disk, and how it was found."""

    role: Literal["clip", "clip_config", "aesthetic_head", "brisque"]
    path: Path
    sha256: str
    found_via: Literal["setting", "cache", "download"]

    @property
    def short(self) -> str:
        return f"sha256:{self.sha256[:12]}"


class ScoringIdentity(BaseModel):
    """What the scores depend on besides the image bytes: part of the cache key.

    ``brisque`` and ``aesthetic`` are the planned source of each model score:
    ``"<library> <model> sha256:…"`` or ``"fallback: <reason>"``.
    """

    version: str = SCORING_VERSION
    stats: str = STATS_VERSION
    fallback: str = FALLBACK_VERSION
    analysis_long_edge: int
    decode_long_edge: int  # the analysed copy is reduced from a decode at this size
    min_side: int
    input_size: int
    brisque: str
    brisque_sha256: str | None = None
    aesthetic: str
    clip_model: str
    clip_sha256: str | None = None
    clip_config_sha256: str | None = None
    head_sha256: str | None = None
    # Classifier-assisted keyword hints (stage 7's evidence) from the same CLIP image
    # embedding: the labels scored against it, how many are kept, the least similarity.
    hint_labels: tuple[str, ...] = ()
    hint_top_k: int = 12
    hint_min_score: float = 0.22

    @property
    def stats_source(self) -> str:
        return f"{STATS_VERSION} @{self.analysis_long_edge}px"


class ScoringSetup(BaseModel):
    """The resolved setup: identity (for the cache key) plus where the files are."""

    identity: ScoringIdentity
    device: str
    batch_size: int
    clip: WeightFile | None = None
    clip_config: WeightFile | None = None
    head: WeightFile | None = None
    brisque: WeightFile | None = None

    @property
    def brisque_available(self) -> bool:
        return not self.identity.brisque.startswith("fallback")

    @property
    def aesthetic_available(self) -> bool:
        return not self.identity.aesthetic.startswith("fallback")


def fallback_source(reason: str) -> str:
    return clip_source(f"fallback: {reason}")


def clip_source(text: str) -> str:
    """Fit a source string into its VARCHAR(255) column."""
    return text if len(text) <= SOURCE_MAX else text[: SOURCE_MAX - 1] + "…"


# --- fingerprints ---------------------------------------------------------------

_fingerprints: dict[tuple[str, int, int], str] = {}
_fp_lock = threading.Lock()


def fingerprint(path: Path) -> str:
    """sha256 of a weight file, memoised per process by (path, size, mtime).

    A ViT-L-14 checkpoint is 1.7 GB: it is hashed once per process, not per chunk.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _fp_lock:
        cached = _fingerprints.get(key)
    if cached:
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _fp_lock:
        _fingerprints[key] = value
    return value


# --- what is installed ------------------------------------------------------------

def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- looking for weights --------------------------------------------------------------

def _torch_hub_dir() -> Path:
    # torch.hub.get_dir() without importing torch: $TORCH_HOME or $XDG_CACHE_HOME/torch.
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return Path(torch_home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(xdg).expanduser() / "torch" / "hub"


class _Found(BaseModel):
    path: Path | None = None
    via: Literal["setting", "cache", "download"] | None = None
    reason: str = ""


def _configured(path: Path | None, what: str, setting: str) -> _Found | None:
    if path is None:
        return None
    path = path.expanduser()
    if path.is_file():
        return _Found(path=path, via="setting")
    return _Found(reason=f"{what} {path} (scoring.{setting}) does not exist")


def _first_file(candidates: list[Path]) -> Path | None:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _brisque_cache_candidates(cfg: ScoringSettings) -> list[Path]:
    folders = [cfg.cache_dir, cfg.cache_dir / "pyiqa"] if cfg.cache_dir else []
    folders.append(_torch_hub_dir() / "pyiqa")  # pyiqa's DEFAULT_CACHE_DIR
    return [folder / BRISQUE_FILE for folder in folders]


def _head_cache_candidates(cfg: ScoringSettings) -> list[Path]:
    folders = [cfg.cache_dir, cfg.cache_dir / "pyiqa"] if cfg.cache_dir else []
    folders.append(_torch_hub_dir() / "pyiqa")  # where pyiqa's laion_aes keeps this head
    return [folder / AESTHETIC_FILE for folder in folders]


def _clip_cached(cfg: ScoringSettings) -> Path | None:
    """open_clip's own caches for (clip_model, clip_pretrained), without downloading."""
    if not _have("open_clip"):
        return None
    from galleryflow.torch_compat import ensure_torchvision

    ensure_torchvision()  # open_clip imports torchvision
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(cfg.clip_model, cfg.clip_pretrained)
    if not pcfg:
        return None
    cache = str(cfg.cache_dir) if cfg.cache_dir else None
    hub_id = (pcfg.get("hf_hub") or "").rstrip("/")
    if hub_id and _have("huggingface_hub"):
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, filename, cache_dir=cache)
            if isinstance(hit, str):
                return Path(hit)
    url = pcfg.get("url") or ""
    if url:
        folders = [cfg.cache_dir] if cfg.cache_dir else []
        folders.append(Path("~/.cache/clip").expanduser())
        return _first_file([folder / os.path.basename(url) for folder in folders])
    return None


def _download(what: str, fetch: Callable[[], Path]) -> _Found:
    try:
        return _Found(path=fetch(), via="download")
    except Exception as exc:  # no network, moved file, …: a fallback, with the reason
        return _Found(reason=f"download of {what} failed: {exc}")


def _find_brisque(cfg: ScoringSettings) -> _Found:
    configured = _configured(cfg.brisque_params, "BRISQUE parameter file", "brisque_params")
    if configured is not None:
        return configured
    hit = _first_file(_brisque_cache_candidates(cfg))
    if hit:
        return _Found(path=hit, via="cache")
    if cfg.allow_download and _have("pyiqa"):
        def fetch() -> Path:
            from galleryflow.torch_compat import ensure_torchvision

            ensure_torchvision()
            from pyiqa.archs.arch_util import get_url_from_name
            from pyiqa.utils.download_util import load_file_from_url

            folder = str(cfg.cache_dir) if cfg.cache_dir else None
            return Path(load_file_from_url(get_url_from_name(BRISQUE_FILE), model_dir=folder))

        return _download("the BRISQUE parameters", fetch)
    return _Found(reason="no BRISQUE parameter file (set scoring.brisque_params)")


def _find_head(cfg: ScoringSettings) -> _Found:
    configured = _configured(cfg.aesthetic_head, "aesthetic head", "aesthetic_head")
    if configured is not None:
        return configured
    hit = _first_file(_head_cache_candidates(cfg))
    if hit:
        return _Found(path=hit, via="cache")
    if cfg.allow_download and _have("torch"):
        def fetch() -> Path:
            from torch.hub import download_url_to_file

            dest = (cfg.cache_dir or _torch_hub_dir() / "pyiqa") / AESTHETIC_FILE
            dest.parent.mkdir(parents=True, exist_ok=True)
            download_url_to_file(AESTHETIC_URL, str(dest), progress=False)
            return dest

        return _download("the LAION aesthetic head", fetch)
    return _Found(reason="no LAION aesthetic head (set scoring.aesthetic_head)")


def _find_clip(cfg: ScoringSettings, search: bool = True) -> _Found:
    """The configured checkpoint; with ``search``, also open_clip's caches or a download.

    Searching imports open_clip (and torch: seconds), so it is skipped when the
    aesthetic head is missing and the checkpoint could not be used anyway.
    """
    configured = _configured(cfg.clip_checkpoint, "open_clip checkpoint", "clip_checkpoint")
    if configured is not None:
        return configured
    hit = _clip_cached(cfg) if search else None
    if hit:
        return _Found(path=hit, via="cache")
    if search and cfg.allow_download and _have("open_clip"):
        def fetch() -> Path:
            from galleryflow.torch_compat import ensure_torchvision

            ensure_torchvision()
            from open_clip.pretrained import download_pretrained, get_pretrained_cfg

            pcfg = get_pretrained_cfg(cfg.clip_model, cfg.clip_pretrained)
            if not pcfg:
                raise ValueError(f"open_clip has no tag {cfg.clip_pretrained!r} for {cfg.clip_model}")
            cache = str(cfg.cache_dir) if cfg.cache_dir else None
            return Path(download_pretrained(pcfg, cache_dir=cache))

        return _download(f"open_clip {cfg.clip_model}/{cfg.clip_pretrained}", fetch)
    return _Found(
        reason=f"no open_clip checkpoint for {cfg.clip_model} (set scoring.clip_checkpoint)"
    )


# --- device ----------------------------------------------------------------------------

class DeviceUnavailable(RuntimeError):
    """``scoring.device`` forces a device torch cannot use here."""


def pick_device(requested: str) -> str:
    """``auto``: cuda, then mps, then cpu. A forced device must exist."""
    if not _have("torch"):
        return "cpu"
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise DeviceUnavailable(
            f"scoring.device is {requested!r} but torch {torch.__version__} cannot use it here"
        )
    return requested


# --- the setup ---------------------------------------------------------------------------

def _weight(role: str, found: _Found) -> WeightFile | None:
    if found.path is None or found.via is None:
        return None
    return WeightFile(role=role, path=found.path, sha256=fingerprint(found.path), found_via=found.via)


def _missing_stack(*modules: str) -> str | None:
    missing = [m for m in modules if not _have(m)]
    if missing:
        return f"{', '.join(missing)} not installed (install the `ai` extra: make install)"
    return None


def resolve_setup(cfg: ScoringSettings, decode_long_edge: int | None = None) -> ScoringSetup:
    """Find the weights, fingerprint them and decide each model score's planned source.

    ``decode_long_edge``: the size images are decoded at before they are reduced to
    ``cfg.analysis_long_edge`` (``Settings.shared_decode_edge``; default: the
    analysis size itself).
    """
    decode_edge = max(decode_long_edge or 0, cfg.analysis_long_edge)
    common = dict(analysis_long_edge=cfg.analysis_long_edge, decode_long_edge=decode_edge,
                  min_side=cfg.min_side, input_size=cfg.input_size, clip_model=cfg.clip_model)

    brisque = head = clip = clip_config = None
    missing = _missing_stack("torch", "pyiqa")
    if missing:
        brisque_plan = fallback_source(missing)
    else:
        found = _find_brisque(cfg)
        brisque = _weight("brisque", found)
        brisque_plan = (
            clip_source(f"pyiqa-{package_version('pyiqa')} brisque params {brisque.short}")
            if brisque else fallback_source(found.reason)
        )

    missing = _missing_stack("torch", "open_clip")
    if missing:
        aesthetic_plan = fallback_source(missing)
    else:
        found_head = _find_head(cfg)
        found_clip = _find_clip(cfg, search=found_head.path is not None)
        if cfg.clip_model_config is not None:
            found_cfg = _configured(cfg.clip_model_config, "open_clip model config", "clip_model_config")
            clip_config = _weight("clip_config", found_cfg) if found_cfg else None
            if clip_config is None and found_cfg is not None:
                found_clip = _Found(reason=found_cfg.reason)
        clip, head = _weight("clip", found_clip), _weight("aesthetic_head", found_head)
        if clip and head:
            config_note = f" config {clip_config.short}" if clip_config else ""
            aesthetic_plan = clip_source(
                f"open_clip-{package_version('open_clip_torch')} {cfg.clip_model} {clip.short}"
                f"{config_note} + laion-aesthetic-mlp {head.short}"
            )
        else:
            reasons = [f.reason for f in (found_clip, found_head) if f.path is None]
            aesthetic_plan = fallback_source("; ".join(reasons))

    identity = ScoringIdentity(
        **common,
        brisque=brisque_plan,
        brisque_sha256=brisque.sha256 if brisque else None,
        aesthetic=aesthetic_plan,
        clip_sha256=clip.sha256 if clip else None,
        clip_config_sha256=clip_config.sha256 if clip_config else None,
        head_sha256=head.sha256 if head else None,
    )
    # torch is only imported when a model will run: a fallback-only setup costs no
    # torch import (seconds) and is deterministic on any machine.
    device = pick_device(cfg.device) if brisque or (clip and head) else "cpu"
    return ScoringSetup(identity=identity, device=device, batch_size=cfg.batch_size, clip=clip,
                        clip_config=clip_config, head=head, brisque=brisque)


# --- describing it ---------------------------------------------------------------------------

class ScoringDescription(BaseModel):
    """What the flow/CLI shows before scoring: one line per score, plus the device."""

    device: str
    batch_size: int
    analysis_long_edge: int
    decode_long_edge: int
    brisque: str
    aesthetic: str
    stats: str
    weights: list[WeightFile]

    def lines(self) -> list[str]:
        out = [
            f"BRISQUE:        {self.brisque}",
            f"CLIP aesthetic: {self.aesthetic}",
            f"blur/brightness/contrast/pHash: {self.stats}",
            f"device {self.device}, CLIP batch {self.batch_size}, "
            f"one decode per image at {self.decode_long_edge} px (shared with the "
            f"model-ready image), analysed at {self.analysis_long_edge} px",
        ]
        out += [f"  {w.role}: {w.path} ({w.short}, from {w.found_via})" for w in self.weights]
        return out


def describe_setup(setup: ScoringSetup) -> ScoringDescription:
    ident = setup.identity
    return ScoringDescription(
        device=setup.device, batch_size=setup.batch_size,
        analysis_long_edge=ident.analysis_long_edge, decode_long_edge=ident.decode_long_edge,
        brisque=ident.brisque,
        aesthetic=ident.aesthetic, stats=ident.stats_source,
        weights=[w for w in (setup.clip, setup.clip_config, setup.head, setup.brisque) if w],
    )
