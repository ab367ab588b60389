"""The vision-model endpoint: an ``OllamaEndpoint`` block, its settings defaults, and
the start-of-stage check.

No block is needed locally: :func:`resolve_endpoint` builds one from
``settings.ollama`` unless ``settings.ollama.block_name`` names a saved block.

:func:`check_endpoint` runs once when stage 7 starts. It fails fast, naming the
host and the model, when the server does not answer or lacks the model, loads
the model (an empty chat is Ollama's documented "load" request) and logs, once
per run, what Ollama's running-model list (``/api/ps``) says about it: the
processor split between GPU and CPU, the context length and the VRAM it holds.
A model half on the CPU is the usual reason captioning crawls, so the line is
worth a glance.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import ollama
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr

from galleryflow.core.prefect_run import flow_run_id
from galleryflow.core.settings import Settings, get_settings
from galleryflow.core.stages import StageError
from galleryflow.core.tls import tls_context

_log = logging.getLogger(__name__)


class OllamaEndpoint(Block):
    """Where the vision model runs, and how galleryflow talks to it."""

    _block_type_name = "Ollama Endpoint"
    _block_type_slug = "ollama-endpoint"
    _description = "An Ollama server and the vision models galleryflow drafts captions with."

    host: str = Field(default="http://127.0.0.1:11434", description="Ollama base URL.")
    model: str = Field(default="qwen2.5vl:7b", description="Primary vision model.")
    fallback_model: str | None = Field(
        default=None, description="Tried when the primary model's drafts keep failing."
    )
    timeout_seconds: float = Field(default=120.0, description="Read timeout per request.")
    connect_timeout_seconds: float = Field(default=5.0)
    keep_alive: str = Field(default="10m", description="How long Ollama keeps the model loaded.")
    options: dict[str, Any] = Field(
        default_factory=lambda: {"temperature": 0.2}, description="Ollama model options."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Bearer token, for an Ollama behind an authenticating proxy."
    )

    def client(self) -> ollama.Client:
        headers = {}
        if self.api_key is not None:
            headers["authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        timeout = httpx.Timeout(self.timeout_seconds, connect=self.connect_timeout_seconds)
        return ollama.Client(host=self.host, timeout=timeout, headers=headers, verify=tls_context())

    @property
    def safe_host(self) -> str:
        return redact_host(self.host)


def redact_host(host: str) -> str:
    """The host without any ``user:password@`` part, for logs and messages."""
    parts = urlsplit(host if "://" in host else f"http://{host}")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def endpoint_from_settings(settings: Settings) -> OllamaEndpoint:
    o = settings.ollama
    return OllamaEndpoint(
        host=o.host, model=o.model, fallback_model=o.fallback_model,
        timeout_seconds=o.timeout_seconds, connect_timeout_seconds=o.connect_timeout_seconds,
        keep_alive=o.keep_alive, options=dict(o.options),
    )


def resolve_endpoint(settings: Settings | None = None) -> OllamaEndpoint:
    """The block named in ``settings.ollama.block_name``, or one built from the settings."""
    settings = settings or get_settings()
    name = settings.ollama.block_name
    if not name:
        return endpoint_from_settings(settings)
    try:
        return OllamaEndpoint.load(name)
    except ValueError as exc:  # Prefect raises ValueError for an unknown block document
        raise StageError(
            f"the OllamaEndpoint block “{name}” (settings.ollama.block_name) could not be "
            f"loaded: {exc}"
        ) from exc


class ModelInfo(BaseModel):
    """What the endpoint check learnt about the model (logged once, kept in the plan)."""

    host: str
    model: str
    digest: str | None = None
    fallback_model: str | None = None
    fallback_digest: str | None = None
    vision: bool | None = None
    loaded: bool = False
    processor: str | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    vram_bytes: int | None = None
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        if not self.loaded:
            return (f"Ollama at {self.host}: model {self.model} is available but not in the "
                    "running-model list yet")
        return (
            f"Ollama at {self.host}: model {self.model} loaded on {self.processor}, "
            f"context {self.context_length or '?'} tokens, "
            f"VRAM {_gb(self.vram_bytes)} of {_gb(self.size_bytes)}"
        )


def _gb(value: int | None) -> str:
    return "?" if value is None else f"{value / 1024**3:.1f} GB"


def processor_split(size: int | None, size_vram: int | None) -> str:
    """``ollama ps``'s PROCESSOR column: 100% GPU, 100% CPU or e.g. 38%/62% CPU/GPU."""
    if not size or size_vram is None or size_vram > size:
        return "unknown processor"
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def same_model(a: str | None, b: str | None) -> bool:
    """Ollama treats ``llava`` and ``llava:latest`` as one model."""
    if not a or not b:
        return False
    norm = lambda name: name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"  # noqa: E731
    return norm(a) == norm(b)


class OllamaUnavailable(StageError):
    """The server did not answer: the stage cannot run (unless offline mode is allowed)."""


class OllamaModelMissing(StageError):
    """The server answered but lacks the model (or it cannot read images)."""


_logged: set[tuple[str, str, str]] = set()
_logged_lock = threading.Lock()


def _run_key() -> str:
    return flow_run_id() or "local"


def check_endpoint(endpoint: OllamaEndpoint, logger: logging.Logger | logging.LoggerAdapter | None = None,
                   load: bool = True) -> ModelInfo:
    """Confirm the server answers and has the model; load it and log its placement once.

    Raises :class:`OllamaUnavailable` or :class:`OllamaModelMissing` (both
    :class:`StageError`) with a message naming the host and the model.
    """
    logger = logger or _log
    host = endpoint.safe_host
    client = endpoint.client()
    try:
        listing = client.list()
    except (ConnectionError, httpx.TransportError) as exc:
        raise OllamaUnavailable(
            f"Ollama at {host} did not answer ({type(exc).__name__}: {exc}). Start it with "
            "`ollama serve`, point settings.ollama.host (GALLERYFLOW_OLLAMA__HOST) or the "
            "OllamaEndpoint block at it, or allow the offline captioner "
            "(GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED=true)."
        ) from exc
    except ollama.ResponseError as exc:
        raise OllamaUnavailable(
            f"Ollama at {host} answered /api/tags with an error: {exc}"
        ) from exc
    models = {m.model: m for m in listing.models if m.model}
    primary = next((m for name, m in models.items() if same_model(name, endpoint.model)), None)
    if primary is None:
        have = ", ".join(sorted(models)) or "no models"
        raise OllamaModelMissing(
            f"Ollama at {host} has no model “{endpoint.model}” (it has: {have}). Run "
            f"`ollama pull {endpoint.model}` on that machine, or set settings.ollama.model."
        )
    info = ModelInfo(host=host, model=endpoint.model, digest=primary.digest)
    if endpoint.fallback_model:
        fallback = next(
            (m for name, m in models.items() if same_model(name, endpoint.fallback_model)), None
        )
        if fallback is None:
            note = (f"fallback model “{endpoint.fallback_model}” is not on {host}: "
                    "rows that fail will be blocked without a fallback")
            logger.warning(note)
            info.notes.append(note)
        else:
            info.fallback_model = endpoint.fallback_model
            info.fallback_digest = fallback.digest
    _describe(client, endpoint, info, logger)
    if load:
        _load_and_place(client, endpoint, info, logger)
    key = (_run_key(), host, endpoint.model)
    with _logged_lock:
        first = key not in _logged
        _logged.add(key)
    if first:
        # A model partly on the CPU is the usual reason captioning crawls: say so loudly.
        on_cpu = info.processor is not None and "CPU" in info.processor
        (logger.warning if on_cpu else logger.info)(info.summary())
    return info


def _describe(client: ollama.Client, endpoint: OllamaEndpoint, info: ModelInfo,
              logger: logging.Logger | logging.LoggerAdapter) -> None:
    try:
        shown = client.show(endpoint.model)
    except (ollama.ResponseError, httpx.HTTPError) as exc:
        info.notes.append(f"/api/show failed: {exc}")
        return
    if shown.capabilities is not None:
        info.vision = "vision" in shown.capabilities
        if not info.vision:
            raise OllamaModelMissing(
                f"model “{endpoint.model}” on {info.host} cannot read images (its capabilities: "
                f"{', '.join(shown.capabilities) or 'none'}); choose a vision model"
            )
    for key, value in (shown.modelinfo or {}).items():
        if key.endswith(".context_length") and isinstance(value, int):
            info.context_length = value


def _load_and_place(client: ollama.Client, endpoint: OllamaEndpoint, info: ModelInfo,
                    logger: logging.Logger | logging.LoggerAdapter) -> None:
    try:
        client.chat(model=endpoint.model, messages=[], keep_alive=endpoint.keep_alive)
        running = client.ps()
    except (ollama.ResponseError, ConnectionError, httpx.HTTPError) as exc:
        raise OllamaUnavailable(
            f"Ollama at {info.host} could not load model “{endpoint.model}”: {exc}"
        ) from exc
    for entry in running.models:
        if same_model(entry.model or entry.name, endpoint.model):
            info.loaded = True
            info.size_bytes = int(entry.size) if entry.size is not None else None
            info.vram_bytes = int(entry.size_vram) if entry.size_vram is not None else None
            info.processor = processor_split(info.size_bytes, info.vram_bytes)
            info.context_length = entry.context_length or info.context_length
            return
