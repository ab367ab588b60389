"""Stage 5's models: open_clip + the LAION aesthetic head, and pyiqa's BRISQUE.

Import this module only when torch is installed (``tasks.scoring`` checks the
setup first). It goes through :mod:`galleryflow.torch_compat` before anything
imports torchvision, open_clip or pyiqa.

Models are loaded once per process and kept in a module-level cache keyed by
their identity (model name + weight fingerprints + device), so every chunk a
worker runs reuses them. A model that fails to load is remembered too (with its
reason), so a broken checkpoint costs one attempt per process, not one per chunk.

pyiqa is installed without its declared dependencies (see the Makefile): its
package ``__init__`` needs only opencv-python-headless, scipy, PyYAML, requests and
tqdm, all in the ``ai`` extra. Its CLIP-based metrics (``laion_aes``, ``clipiqa``…)
are not used: they import ``pkg_resources`` (gone from setuptools >= 81) and the
``clip`` package; the aesthetic score runs open_clip directly with the same head.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from galleryflow.scoring.setup import ScoringSetup

_log = logging.getLogger(__name__)
from galleryflow.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402
from torch import nn  # noqa: E402

BRISQUE_FEATURES = 36  # 18 natural-scene statistics at two scales


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is the fallback reason."""


class AestheticMLP(nn.Module):
    """The LAION improved-aesthetic-predictor head (christophschuhmann/improved-aesthetic-predictor).

    Input: the L2-normalised CLIP image embedding (768-d for ViT-L-14); output: a
    rating of about 1–10. The layer indices match the published state dict
    (``layers.0``, ``layers.2``, ``layers.4``, ``layers.6``, ``layers.7``); the
    dropouts are inactive in eval mode and there is no activation, as published.
    """

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)


def load_aesthetic_head(path: Path, device: str = "cpu") -> AestheticMLP:
    """Load a LAION head state dict (plain, or under ``state_dict`` as Lightning saves it)."""
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"aesthetic head {path} does not load: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "layers.0.weight" not in state:
        raise ModelLoadError(f"aesthetic head {path} is not a LAION aesthetic MLP state dict")
    head = AestheticMLP(int(state["layers.0.weight"].shape[1]))
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"aesthetic head {path} does not match the LAION MLP: {exc}") from exc
    return head.to(device).eval()


def _image_size(visual: Any) -> int | None:
    size = getattr(visual, "image_size", None)
    if isinstance(size, (tuple, list)):
        return int(size[0]) if size[0] == size[-1] else None
    return int(size) if size else None


class AestheticModel:
    """open_clip image tower + LAION head; batches of preprocessed images in, ratings out."""

    def __init__(self, setup: ScoringSetup) -> None:
        if setup.clip is None or setup.head is None:
            raise ModelLoadError(setup.identity.aesthetic)
        import open_clip

        ident = setup.identity
        self.device = setup.device
        if setup.clip_config is not None:
            open_clip.add_model_config(setup.clip_config.path)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                ident.clip_model, pretrained=str(setup.clip.path), device=self.device,
                weights_only=True,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"open_clip could not load {ident.clip_model} from {setup.clip.path}: {exc}"
            ) from exc
        self.model = model.eval()
        self.preprocess = preprocess
        native = _image_size(model.visual)
        if native is not None and native != ident.input_size:
            raise ModelLoadError(
                f"{ident.clip_model} takes {native}-px inputs but scoring.input_size is "
                f"{ident.input_size}"
            )
        self.head = load_aesthetic_head(setup.head.path, self.device)
        self.clip_model = ident.clip_model
        self._labels: dict[tuple[str, ...], torch.Tensor | None] = {}
        self._labels_lock = threading.Lock()
        embed = getattr(model.visual, "output_dim", None)
        if embed is not None and embed != self.head.input_size:
            raise ModelLoadError(
                f"the aesthetic head takes {self.head.input_size}-d embeddings but "
                f"{ident.clip_model} gives {embed}-d"
            )

    def prepare(self, img: Image.Image) -> torch.Tensor:
        """The model's own preprocessing (resize, centre crop, normalise); thread-safe."""
        return self.preprocess(img)

    def embed(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """Unit-length image embeddings: one forward pass serves the aesthetic rating
        and the keyword hints."""
        with torch.inference_mode():
            pixels = torch.stack(batch).to(self.device)
            embedding = self.model.encode_image(pixels).float()
            return embedding / embedding.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def rate(self, embedding: torch.Tensor) -> list[float]:
        with torch.inference_mode():
            return [float(v) for v in self.head(embedding).squeeze(-1).cpu()]

    def score(self, batch: list[torch.Tensor]) -> list[float]:
        return self.rate(self.embed(batch))

    def label_embeddings(self, labels: tuple[str, ...]) -> torch.Tensor | None:
        """Unit-length text embeddings of "a photo of {label}" (cached per label set);
        ``None`` when the text tower cannot take them (a checkpoint without one, a
        tokenizer that would have to be downloaded)."""
        with self._labels_lock:
            if labels in self._labels:
                return self._labels[labels]
            try:
                import open_clip

                tokens = open_clip.get_tokenizer(self.clip_model)(
                    [f"a photo of {label}" for label in labels]).to(self.device)
                with torch.inference_mode():
                    text = self.model.encode_text(tokens).float()
                value = text / text.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            except Exception as exc:  # no usable text tower: hints are simply absent
                _log.warning("CLIP keyword hints unavailable (%s: %s)", type(exc).__name__, exc)
                value = None
            self._labels[labels] = value
            return value

    def hints(self, embedding: torch.Tensor, labels: tuple[str, ...], top_k: int,
              min_score: float) -> list[list[tuple[str, float]]] | None:
        """Zero-shot labels per image: (label, cosine similarity), best first."""
        text = self.label_embeddings(labels) if labels else None
        if text is None:
            return None
        return zero_shot(embedding, text, labels, top_k, min_score)


def zero_shot(images: torch.Tensor, texts: torch.Tensor, labels: tuple[str, ...], top_k: int,
              min_score: float) -> list[list[tuple[str, float]]]:
    """CLIP zero-shot labelling: each image's cosine similarity with each label's text
    embedding (both unit length), the ``top_k`` best at or above ``min_score``."""
    with torch.inference_mode():
        similarity = images @ texts.T
        best = similarity.topk(min(top_k, len(labels)), dim=-1)
    out = []
    for scores, indices in zip(best.values.cpu().tolist(), best.indices.cpu().tolist()):
        out.append([(labels[i], round(s, 4)) for s, i in zip(scores, indices) if s >= min_score])
    return out


def check_brisque_params(path: Path) -> None:
    """Refuse a parameter file that is not ``(sv_coef[N], sv[N, 36])``.

    pyiqa loads the file with ``weights_only=False`` (full pickle); loading it here
    first with ``weights_only=True`` means a file carrying code is refused before
    pyiqa ever unpickles it.
    """
    try:
        params = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"BRISQUE parameter file {path} does not load safely: {exc}") from exc
    ok = (
        isinstance(params, (tuple, list)) and len(params) == 2
        and all(isinstance(p, torch.Tensor) for p in params)
        and params[0].dim() == 1 and params[1].dim() == 2
        and params[1].shape == (params[0].shape[0], BRISQUE_FEATURES)
    )
    if not ok:
        raise ModelLoadError(
            f"BRISQUE parameter file {path} is not (sv_coef[N], sv[N, {BRISQUE_FEATURES}])"
        )


class BrisqueModel:
    """pyiqa's BRISQUE metric, created through ``pyiqa.create_metric`` with local parameters."""

    def __init__(self, setup: ScoringSetup) -> None:
        if setup.brisque is None:
            raise ModelLoadError(setup.identity.brisque)
        check_brisque_params(setup.brisque.path)
        try:
            import pyiqa

            self.metric = pyiqa.create_metric(
                "brisque", device=torch.device(setup.device),
                pretrained_model_path=str(setup.brisque.path),
            )
        except Exception as exc:
            raise ModelLoadError(f"pyiqa BRISQUE could not be created: {exc}") from exc
        self.device = setup.device

    def score(self, img: Image.Image) -> float:
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        with torch.inference_mode():
            value = self.metric(pixels.permute(2, 0, 1).unsqueeze(0).to(self.device))
        score = float(value.flatten()[0])
        if not np.isfinite(score):
            raise ValueError("BRISQUE gave a non-finite score (flat image?)")
        return score


_lock = threading.Lock()
_cache: dict[tuple[str, ...], Any] = {}


def _cached(key: tuple[str, ...], build: Any) -> Any:
    """Build once per process; a failure is cached as its ModelLoadError."""
    with _lock:
        if key not in _cache:
            try:
                _cache[key] = build()
            except ModelLoadError as exc:
                _cache[key] = exc
            except Exception as exc:  # an unexpected library error is still a reason
                _cache[key] = ModelLoadError(f"{type(exc).__name__}: {exc}")
        value = _cache[key]
    if isinstance(value, ModelLoadError):
        raise value
    return value


def aesthetic_model(setup: ScoringSetup) -> AestheticModel:
    ident = setup.identity
    key = ("aesthetic", ident.aesthetic, ident.clip_sha256 or "", ident.clip_config_sha256 or "",
           ident.head_sha256 or "", str(ident.input_size), setup.device)
    return _cached(key, lambda: AestheticModel(setup))


def brisque_model(setup: ScoringSetup) -> BrisqueModel:
    key = ("brisque", setup.identity.brisque_sha256 or "", setup.device)
    return _cached(key, lambda: BrisqueModel(setup))


def loaded_models() -> list[tuple[str, ...]]:
    """Keys of the models this process holds (for tests and diagnostics)."""
    with _lock:
        return [key for key, value in _cache.items() if not isinstance(value, Exception)]
