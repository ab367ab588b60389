"""A loopback HTTP server that speaks Ollama's API, for tests and the benchmark.

No vision model can be downloaded here, so this stand-in answers in its place,
through the real ``ollama`` client: ``/api/chat`` (messages with base64 images,
``format`` = a JSON schema, ``options``, ``keep_alive``; an empty message list
loads the model, as in Ollama), ``/api/tags``, ``/api/show``, ``/api/ps`` and
``/api/version``.

Answers are scriptable per request. By default it answers *well*, and the answer
depends on the request: it reads the evidence block of the prompt (time of day,
location, set name) and the image (sky brightness), so different photos get
different drafts, as from a real model. Scripts queue other replies per model:

    stub.script("llava:7b", Raw("{not json"), Good(caption="..."))   # FIFO, then default
    stub.default = Good(caption="the same for everyone")              # duplicates
    stub.default = lambda call: Slow(5.0)                             # any callable

Replies: :class:`Good` (with optional field overrides), :class:`Answer` (a
given JSON object), :class:`Raw` (verbatim text: garbage), :class:`Slow`
(sleep, then another reply: timeouts and the benchmark's latency),
:class:`HttpError`, :class:`Disconnect` (drop the connection). Models can be
missing (404, as Ollama answers) and the running-model list reports a
configurable GPU/CPU split.

:func:`point_at` aims galleryflow's settings at a running stand-in (models
:data:`PRIMARY` and :data:`FALLBACK`, fast retries, short timeouts).

The module imports nothing from the tests package, so ``bench/`` loads it from this
file (``bench/_ollama_stub.py``) without importing ``tests``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Union

from PIL import Image

if TYPE_CHECKING:
    from galleryflow.core.settings import Settings

# --------------------------------------------------------------------------- replies


class Good:
    """A well-formed, evidence-based draft; keyword arguments override its fields."""

    def __init__(self, **overrides: Any) -> None:
        self.overrides = overrides

    def __repr__(self) -> str:
        return f"Good({self.overrides!r})"


@dataclass
class Answer:
    """Exactly this JSON object as the message content."""

    data: Any


@dataclass
class Raw:
    """This text verbatim as the message content (malformed JSON, prose, …)."""

    text: str


@dataclass
class Slow:
    """Wait ``seconds`` before answering with ``then``."""

    seconds: float
    then: "Reply" = field(default_factory=Good)


@dataclass
class HttpError:
    status: int = 500
    message: str = "model runner has unexpectedly stopped"


@dataclass
class Disconnect:
    """Close the connection without answering (a crashed or restarted server)."""


Reply = Union[Good, Answer, Raw, Slow, HttpError, Disconnect]
Responder = Union[Reply, Callable[["ChatCall"], Reply]]


@dataclass
class ChatCall:
    """One /api/chat request as the stand-in saw it."""

    model: str
    messages: list[dict[str, Any]]
    format: Any
    options: dict[str, Any]
    keep_alive: Any
    images: list[bytes]
    started: float
    finished: float | None = None

    @property
    def prompt(self) -> str:
        return "\n".join(m.get("content", "") for m in self.messages if m.get("role") == "user")

    @property
    def evidence(self) -> dict[str, Any]:
        """The JSON evidence block of the first user message, as a model would read it."""
        match = re.search(r"<evidence>\s*(\{.*?\})\s*</evidence>", self.prompt, re.S)
        return json.loads(match.group(1)) if match else {}

    @property
    def is_repair(self) -> bool:
        return any(m.get("role") == "assistant" for m in self.messages)


# --------------------------------------------------------------------------- good drafts

_TEMPLATES = [
    ("Rolling hills near {place} under a {sky} sky, caught in {light} light.",
     "Green hills beneath a {sky} sky near {place}", ["hills", "sky"]),
    ("Layered ridges fade toward the horizon at {place}, the {sky} sky above them in {light} light.",
     "Layered ridges and a {sky} sky at {place}", ["ridges", "horizon"]),
    ("A quiet {tod} at {place}: dark slopes and textured foliage below a {sky} sky.",
     "Dark slopes with foliage under a {sky} sky", ["slopes", "foliage"]),
    ("Two ranges of hills overlap above {place} while {light} light fills the {sky} sky.",
     "Two overlapping ranges of hills at {place}", ["hills", "ranges"]),
    ("The sun hangs over the ridge line of {place}, {tod} colour spreading through a {sky} sky.",
     "Sun above a ridge line in a {sky} sky", ["sun", "ridge"]),
    ("Foliage-covered slopes of {place} reach up to a {sky} sky during the {tod}.",
     "Slopes covered in foliage reaching a {sky} sky", ["slopes", "foliage"]),
    ("{place_title} seen from the valley floor, its green hills outlined by {light} light.",
     "Valley view of green hills at {place}", ["valley", "hills"]),
    ("Sky and land split the frame at {place}; the {sky} upper half glows over darker hills.",
     "Frame split between {sky} sky and darker hills", ["sky", "land"]),
    ("A broad {tod} panorama of {place}, hills stacked in shades of green under {light} light.",
     "Panorama of green hills at {place}", ["panorama", "hills"]),
    ("Soft texture of trees and meadows near {place}, with the {sky} sky taking the top third.",
     "Trees and meadows beneath a {sky} sky", ["trees", "meadows"]),
]

# A second sentence picked by the image's hash: photos of one series taken at the
# same half hour of different days still get different captions.
_DETAILS = [
    "A thin band of cloud crosses the upper sky.",
    "Grain and texture show in the darker foliage.",
    "The nearest slope holds most of the fine detail.",
    "Shadows gather where the ranges meet.",
    "The far range softens into haze.",
    "Colour deepens toward the bottom of the frame.",
    "Light catches the crest of the nearest hill.",
    "An open stretch of sky balances the heavy ground.",
]

_LIGHT = {
    "night": "faint moon", "early morning": "soft dawn", "morning": "clear morning",
    "midday": "bright midday", "afternoon": "warm afternoon", "evening": "golden evening",
    "late evening": "fading evening",
}


def _sky_word(images: list[bytes]) -> str:
    if not images:
        return "grey"
    with Image.open(io.BytesIO(images[0])) as img:
        top = img.convert("L").crop((0, 0, img.width, max(1, img.height // 5))).resize((16, 4))
        mean = sum(top.getdata()) / 64
    return "dark" if mean < 70 else "deep blue" if mean < 140 else "pale"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def good_draft(call: ChatCall, order: int | None = None, **overrides: Any) -> dict[str, Any]:
    """A draft a careful model would write from this request's evidence and image.

    ``order``: the image's rank among the images this server has seen; it spreads
    a long series over all 80 wordings (a real model varies with the content).
    """
    ev = call.evidence
    place = ev.get("location") or ev.get("subject_hint") or ev.get("set_name") or "the hills"
    tod = ev.get("time_of_day") or "day"
    stamp = ev.get("date_taken") or ""
    # A repair prompt gets a reworded answer, as a real model would give.
    repairs = sum(m.get("role") == "assistant" for m in call.messages)
    if order is None:
        order = int(hashlib.sha256(call.images[0] if call.images else b"").hexdigest()[:8], 16)
    index = (order + 3 * repairs) % len(_TEMPLATES)
    detail = _DETAILS[(order // len(_TEMPLATES) + repairs) % len(_DETAILS)]
    caption_t, alt_t, extra = _TEMPLATES[index]
    values = {"place": place, "place_title": place[:1].upper() + place[1:], "sky": _sky_word(call.images),
              "light": _LIGHT.get(tod, "daylight"), "tod": tod}
    caption = caption_t.format(**values)
    alt = alt_t.format(**values)
    alt = alt[:1].upper() + alt[1:]
    keywords = [*extra, place.lower(), tod]
    hhmm = stamp[-5:].replace(":", "") if stamp else "photo"
    draft = {
        "caption": caption[:1].upper() + caption[1:] + " " + detail,
        "alt_text": alt,
        "keywords": keywords,
        "subject": f"hills at {place}",
        "file_name": _slug(f"{place} {extra[0]} {tod} {hhmm}"),
    }
    draft.update(overrides)
    return draft


# --------------------------------------------------------------------------- the server


@dataclass
class StubModel:
    name: str
    digest: str
    size: int = 6 * 1024**3
    vram_fraction: float = 1.0
    context_length: int = 8192
    vision: bool = True


class OllamaStub:
    """The stand-in; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, models: tuple[str, ...] = ("llava:7b",), vram_fraction: float = 1.0,
                 vision: bool = True) -> None:
        # A fresh digest per server: a cached answer is keyed on it, as on a real model.
        salt = f"{id(self)}-{time.time_ns()}"
        self.models = {
            name: StubModel(name, "sha256:" + hashlib.sha256(f"{name}{salt}".encode()).hexdigest(),
                            vram_fraction=vram_fraction, vision=vision)
            for name in models
        }
        self.loaded: dict[str, datetime] = {}
        self.default: Responder = Good()
        self.calls: list[ChatCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._image_order: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control
    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, model: str, *replies: Reply) -> None:
        """Queue replies for the next chat requests to ``model`` (``"*"``: any model)."""
        with self._lock:
            self._scripts[model].extend(replies)

    def remove_model(self, name: str) -> None:
        with self._lock:
            self.models.pop(name, None)
            self.loaded.pop(name, None)

    def chat_calls(self, model: str | None = None) -> list[ChatCall]:
        with self._lock:
            return [c for c in self.calls if model is None or c.model == model]

    def start(self) -> "OllamaStub":
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a free port
        self.port = self._server.server_address[1]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ollama-stub",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "OllamaStub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour
    def _next_reply(self, call: ChatCall) -> Reply:
        with self._lock:
            for key in (call.model, "*"):
                if self._scripts[key]:
                    return self._scripts[key].popleft()
            responder = self.default
        return responder(call) if callable(responder) else responder

    def image_order(self, call: ChatCall) -> int:
        key = hashlib.sha256(call.images[0] if call.images else b"").hexdigest()
        with self._lock:
            return self._image_order.setdefault(key, len(self._image_order))

    def _enter(self, call: ChatCall) -> None:
        with self._lock:
            self.calls.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self, call: ChatCall) -> None:
        with self._lock:
            self.in_flight -= 1
            call.finished = time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    owner: OllamaStub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    # -- plumbing
    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to tell it

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def _model(self, name: str | None) -> StubModel | None:
        if not name:
            return None
        candidates = [name] if ":" in name else [name, f"{name}:latest"]
        return next((self.owner.models[c] for c in candidates if c in self.owner.models), None)

    def _not_found(self, name: str | None) -> None:
        self._send(404, {"error": f"model '{name}' not found"})

    # -- routes
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/api/version":
            self._send(200, {"version": "0.12.0-galleryflow-stub"})
        elif self.path == "/api/tags":
            self._send(200, {"models": [self._tag(m) for m in self.owner.models.values()]})
        elif self.path == "/api/ps":
            running = []
            for name, expires in self.owner.loaded.items():
                model = self.owner.models.get(name)
                if model:
                    running.append({**self._tag(model), "expires_at": expires.isoformat(),
                                    "size_vram": int(model.size * model.vram_fraction),
                                    "context_length": model.context_length})
            self._send(200, {"models": running})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        if self.path == "/api/show":
            model = self._model(body.get("model"))
            if model is None:
                return self._not_found(body.get("model"))
            self._send(200, {
                "modelfile": "", "parameters": "temperature 0.2", "template": "{{ .Prompt }}",
                "details": self._details(),
                "model_info": {"general.architecture": "stubvl",
                               "stubvl.context_length": model.context_length},
                "capabilities": ["completion", "vision"] if model.vision else ["completion"],
            })
        elif self.path == "/api/chat":
            self._chat(body)
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def _chat(self, body: dict[str, Any]) -> None:
        name = body.get("model")
        model = self._model(name)
        if model is None:
            return self._not_found(name)
        messages = body.get("messages") or []
        self.owner.loaded[model.name] = datetime.now(timezone.utc) + timedelta(minutes=10)
        if not messages:  # Ollama: an empty chat loads the model
            return self._send(200, self._response(model.name, "", done_reason="load"))
        images = [base64.b64decode(img) for m in messages for img in (m.get("images") or [])]
        call = ChatCall(model=model.name, messages=messages, format=body.get("format"),
                        options=body.get("options") or {}, keep_alive=body.get("keep_alive"),
                        images=images, started=time.monotonic())
        self.owner._enter(call)
        try:
            reply = self.owner._next_reply(call)
            while isinstance(reply, Slow):
                self.owner.sleep(reply.seconds)
                reply = reply.then
            if isinstance(reply, Disconnect):
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if isinstance(reply, HttpError):
                return self._send(reply.status, {"error": reply.message})
            if isinstance(reply, Good):
                content = json.dumps(good_draft(call, self.owner.image_order(call),
                                                **reply.overrides))
            elif isinstance(reply, Answer):
                content = json.dumps(reply.data)
            else:
                content = reply.text
            self._send(200, self._response(model.name, content))
        finally:
            self.owner._leave(call)

    # -- payloads
    @staticmethod
    def _details() -> dict[str, Any]:
        return {"format": "gguf", "family": "stubvl", "families": ["stubvl", "clip"],
                "parameter_size": "7B", "quantization_level": "Q4_K_M"}

    def _tag(self, model: StubModel) -> dict[str, Any]:
        return {"name": model.name, "model": model.name, "digest": model.digest,
                "size": model.size, "modified_at": "2026-01-01T00:00:00Z",
                "details": self._details()}

    @staticmethod
    def _response(model: str, content: str, done_reason: str = "stop") -> dict[str, Any]:
        return {
            "model": model, "created_at": datetime.now(timezone.utc).isoformat(),
            "message": {"role": "assistant", "content": content},
            "done": True, "done_reason": done_reason,
            "total_duration": 1_000_000, "load_duration": 0,
            "prompt_eval_count": 100, "eval_count": max(1, len(content) // 4),
        }


@contextmanager
def ollama_stub(**kwargs: Any) -> Iterator[OllamaStub]:
    with OllamaStub(**kwargs) as stub:
        yield stub


# --------------------------------------------------------------------------- aiming

PRIMARY = "llava:7b"
FALLBACK = "moondream:latest"


def point_at(settings: Settings, stub: OllamaStub, fallback: str | None = None) -> None:
    """Aim stage 7 (``settings.ollama``) at the stand-in, with fast retries and short
    timeouts."""
    o = settings.ollama
    o.host = stub.host
    o.model = PRIMARY
    o.fallback_model = fallback
    o.timeout_seconds = 5.0
    o.connect_timeout_seconds = 1.0
    o.retry_backoff_seconds = 0.01
    o.request_retries = 2
