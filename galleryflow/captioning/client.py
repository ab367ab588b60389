"""How a request reaches the vision model: one ``ollama`` client per endpoint and
process, and one chat request with retries and backoff; separate from the prompts
because none of it (host, timeouts, retries) is part of an answer's cache key.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
from pydantic import BaseModel, ConfigDict

from blocks.ollama import OllamaEndpoint, OllamaModelMissing, OllamaUnavailable
from galleryflow.captioning.prompts import DRAFT_SCHEMA, ModelCall, build_messages
from galleryflow.core.stages import StageError

_log = logging.getLogger(__name__)


class Transport(BaseModel):
    """How to reach the model; not part of the cache key."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    endpoint: OllamaEndpoint
    retries: int = 3
    backoff_seconds: float = 2.0


class ModelReply(BaseModel):
    content: str
    model: str
    eval_count: int | None = None
    total_seconds: float | None = None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, httpx.TransportError)):
        return True
    return isinstance(exc, ollama.ResponseError) and (
        exc.status_code >= 500 or exc.status_code in (408, 429)
    )


_clients: dict[tuple[Any, ...], ollama.Client] = {}
_clients_lock = threading.Lock()


def client_for(endpoint: OllamaEndpoint) -> ollama.Client:
    """One client (one connection pool) per endpoint configuration and process.

    Building an ``httpx`` client loads the CA bundle (~15 ms here); per request
    that was a tenth of the stage's own overhead. ``httpx.Client`` is thread-safe.
    """
    secret = endpoint.api_key.get_secret_value() if endpoint.api_key else None
    key = (endpoint.host, endpoint.timeout_seconds, endpoint.connect_timeout_seconds,
           hashlib.sha256(secret.encode()).hexdigest() if secret else None)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = endpoint.client()
        return client


def request_answer(call: ModelCall, transport: Transport) -> ModelReply:
    """One chat request with retries and backoff; a persisting error is a StageError."""
    endpoint = transport.endpoint
    host = endpoint.safe_host
    try:
        image = Path(call.ollama_path).read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"{call.file}: model-ready image unreadable: {exc}") from exc
    messages = build_messages(call, image)
    client = client_for(endpoint)
    last: BaseException | None = None
    for attempt in range(transport.retries + 1):
        if attempt:
            time.sleep(transport.backoff_seconds * 2 ** (attempt - 1))
        started = time.monotonic()
        try:
            response = client.chat(model=call.model, messages=messages, format=DRAFT_SCHEMA,
                                   options=call.options or None, keep_alive=endpoint.keep_alive)
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise OllamaModelMissing(
                    f"Ollama at {host} no longer has model “{call.model}” ({exc}) while "
                    f"captioning {call.file}"
                ) from exc
            if not _transient(exc):
                raise StageError(
                    f"Ollama at {host} refused the request for {call.file} with model "
                    f"“{call.model}”: {exc}"
                ) from exc
            last = exc
        except (ConnectionError, httpx.TransportError) as exc:
            last = exc
        else:
            return ModelReply(content=response.message.content or "", model=call.model,
                              eval_count=response.eval_count,
                              total_seconds=round(time.monotonic() - started, 3))
        _log.warning("Ollama request for %s failed (attempt %d of %d): %s: %s", call.file,
                     attempt + 1, transport.retries + 1, type(last).__name__, last)
    raise OllamaUnavailable(
        f"Ollama at {host} failed {transport.retries + 1} times for {call.file} with model "
        f"“{call.model}”: {type(last).__name__}: {last}"
    )
