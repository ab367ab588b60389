"""The review page: ``galleryflow review --web`` (and part of ``galleryflow serve``).

A small Starlette app (Prefect's own ASGI stack, Jinja templates, no front-end build)
that lists the open review gates and shows one page of one gate: every photo large
enough to judge (a larger one on demand), its caption, alt text, keywords, subject
and file name editable in place, the proof's issues and fixes, the scores and the
near-duplicate group. A reviewer works through it with the keyboard or the mouse and
submits the page; the answer goes through the Prefect API as the same
``ReviewDecision`` the Prefect UI's form sends (:mod:`galleryflow.review.answer`), so
the paused run stays the one source of truth. Edits are checked before they are sent,
with the same guardrails stage 7 applies to a person's draft
(``tasks.captioning.validate_edit``).

Access: the page binds to loopback by default and then serves loopback clients only.
With a token (``review.web_token`` or a Secret block named by
``review.web_token_block``) every request must present it (``Authorization: Bearer``,
the ``gf_review`` cookie, or ``?token=`` once, which sets the cookie); it is compared
in constant time. A non-loopback bind without a token refuses to start. A refused
request gets 401 and not a byte of a photo or a caption. Photos are served only from
the paths galleryflow's DB holds for a row id; no path is ever taken from a request.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from galleryflow.core.settings import Settings
from galleryflow.db import Photo, Proof, session_scope
from galleryflow.publishing.hold import holding_rows, held_message
from galleryflow.review.answer import OpenGate, answer_gate, open_gates
from galleryflow.review.forms import BULK_NONE, ReviewRowInput
from galleryflow.review.page import PageRow, image_source, jpeg_preview, page_rows

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
COOKIE = "gf_review"
# Long edges of what /photo serves: the page's photo (the model-ready copy's size),
# the larger preview (from the incoming copy) and the thumbnail strip.
SIZES = {"page": (1024, 82), "large": (2048, 88), "thumb": (160, 70)}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class ReviewPageError(RuntimeError):
    """The review page cannot start as configured (a public bind without a token…)."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(settings: Settings) -> str | None:
    """The review page's token: the setting, else the named Secret block, else none."""
    review = settings.review
    if review.web_token is not None and review.web_token.get_secret_value():
        return review.web_token.get_secret_value()
    if review.web_token_block:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(review.web_token_block).get()
        except ValueError as exc:
            raise ReviewPageError(f"review.web_token_block {review.web_token_block!r}: no Secret "
                                  f"block of that name ({exc})") from None
        return str(value) or None
    return None


class TokenGuard:
    """ASGI middleware: loopback only without a token; the token from everyone with one."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client = request.client.host if request.client else None
        if self.token is None:
            # Loopback clients only, and only under a loopback name: a page on another
            # site cannot reach this one through a name that resolves to 127.0.0.1.
            host = (request.url.hostname or "").lower()
            if not is_loopback(client) or not (host in LOOPBACK_NAMES or is_loopback(host)):
                await _refuse(scope, receive, send, "This review page serves this machine only; "
                              "set review.web_token to let other machines in.")
                return
        else:
            given = _presented(request)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _refuse(scope, receive, send, "A review token is required "
                              "(open the link `galleryflow review --web` printed).")
                return
            if "token" in request.query_params:
                # Once from the printed link: into a cookie, out of the address bar.
                query = {k: v for k, v in parse_qs(request.url.query).items() if k != "token"}
                target = request.url.path + (f"?{urlencode(query, doseq=True)}" if query else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(COOKIE, given, httponly=True, samesite="strict",
                                    secure=request.url.scheme == "https")
                await response(scope, receive, send)
                return
        if request.method == "POST" and not _same_origin(request):
            await _refuse(scope, receive, send, "cross-site request refused", status=403)
            return
        await self.app(scope, receive, send)


def _presented(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(COOKIE) or request.query_params.get("token")


def _same_origin(request: Request) -> bool:
    """POSTs carry JSON from this page: a form on another site can send neither."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host")


async def _refuse(scope: Scope, receive: Receive, send: Send, message: str,
                  status: int = 401) -> None:
    headers = {"WWW-Authenticate": 'Bearer realm="galleryflow review"'} if status == 401 else {}
    await PlainTextResponse(message, status_code=status, headers=headers)(scope, receive, send)


class _Previews:
    """Recently made previews, by (row, source file, its mtime, size)."""

    def __init__(self, capacity: int = 256) -> None:
        self.items: OrderedDict[tuple, bytes] = OrderedDict()
        self.capacity = capacity
        self.lock = threading.Lock()

    def get(self, key: tuple, make: Any) -> bytes:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        data = make()
        with self.lock:
            self.items[key] = data
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
        return data


class GateView(BaseModel):
    """One page of one gate, as the review page shows it."""

    gate: OpenGate
    rows: list[PageRow]
    form: list[ReviewRowInput]
    held: list[str]


def gate_view(run_id: str, settings: Settings, form_wait: float = 5.0) -> GateView | None:
    """The open gate of ``run_id`` (its stored form) with what the DB knows of each row."""
    gates = _gates(run_id, form_wait)
    if not gates:
        return None
    gate = gates[0]
    ids = [r.row_id for r in gate.rows]
    with session_scope() as db:
        found = {r.id: r for r in db.scalars(select(Photo).where(Photo.id.in_(ids)))}
        proofs = {p.review_id: p for p in db.scalars(select(Proof).where(Proof.review_id.in_(ids)))}
        photos = [found[i] for i in ids if i in found]
        shown = {r.row_id: r for r in page_rows(photos, proofs, settings)}
        held = holding_rows(db, {p.set_key for p in photos})
    form = [r for r in gate.rows if r.row_id in shown]
    return GateView(gate=gate, rows=[shown[r.row_id] for r in form], form=form,
                    held=[held_message(k, v) for k, v in sorted(held.items())])


def _gates(run_id: str, form_wait: float = 0) -> list[OpenGate]:
    """The open gate of ``run_id`` (none for an unknown or malformed run id)."""
    from prefect.exceptions import ObjectNotFound

    try:
        return open_gates(str(UUID(run_id)), form_wait=form_wait)[0]
    except (ValueError, ObjectNotFound):
        return []


def check_row(row_id: int, values: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The gate's own checks on a row's edits (``tasks.review_gate.check_edits``: stage 7's
    guardrails for a person's draft, spelling), nothing written: ``errors`` refuse the
    edit, ``warnings`` are only reported."""
    from tasks.review_gate import check_edits

    card = ReviewRowInput(row_id=row_id, file="", **{
        k: str(values.get(k, "")) for k in ("caption", "alt_text", "keywords", "subject",
                                            "web_file_name")})
    verdict = check_edits(card, settings)
    return {"row_id": row_id, "errors": verdict.issues, "warnings": verdict.flags}


def _decided(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["decision"]] = counts.get(row["decision"], 0) + 1
    return counts


def create_app(settings: Settings, token: str | None = None) -> Starlette:
    """The review page as an ASGI app (``token``: required from every client when set)."""
    previews = _Previews()

    def index(request: Request) -> Response:
        gates, formless = open_gates(form_wait=0)
        return TEMPLATES.TemplateResponse(request, "index.html", {
            "gates": gates, "formless": formless, "prefect_ui": _prefect_ui()})

    def gate_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        view = gate_view(run_id, settings)
        if view is None:
            return TEMPLATES.TemplateResponse(request, "index.html", {
                "gates": [], "formless": [], "prefect_ui": _prefect_ui(),
                "message": f"Run {run_id} has no open review gate (answered, or not paused)."},
                status_code=404)
        data = [{**shown.model_dump(), "form": form.model_dump()}
                for shown, form in zip(view.rows, view.form, strict=True)]
        return TEMPLATES.TemplateResponse(request, "gate.html", {
            "view": view, "rows_data": data, "prefect_ui": _prefect_ui()})

    def photo(request: Request) -> Response:
        try:
            row_id = int(request.path_params["row_id"])
        except ValueError:
            return PlainTextResponse("no such photo", status_code=404)
        size = request.query_params.get("size", "page")
        if size not in SIZES:
            return PlainTextResponse("size: page, large or thumb", status_code=400)
        with session_scope() as db:
            row = db.get(Photo, row_id)
            source = None
            if row is not None:
                # The larger preview is made from the incoming copy, the rest from the
                # model-ready one (already small): paths from the DB, never the request.
                if size == "large" and row.incoming_path and Path(row.incoming_path).is_file():
                    source = Path(row.incoming_path)
                else:
                    source = image_source(row)
        if source is None:
            return PlainTextResponse("no image file for this photo", status_code=404)
        edge, quality = SIZES[size]
        key = (row_id, str(source), source.stat().st_mtime_ns, size)
        data = previews.get(key, lambda: jpeg_preview(source, edge, quality))
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300"})

    async def check(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = await request.json()
        try:
            row_id = int(body.get("row_id", 0))
        except (TypeError, ValueError):
            return JSONResponse({"error": "row_id must be a number"}, status_code=400)
        return JSONResponse(await run_in_threadpool(check_row, row_id, body, settings))

    def state(request: Request) -> Response:
        gates = _gates(request.path_params["run_id"])
        return JSONResponse({"key": gates[0].key if gates else None,
                             "rows": len(gates[0].rows) if gates else 0})

    async def submit(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = await request.json()
        return await run_in_threadpool(_submit, request.path_params["run_id"], body)

    def _submit(run_id: str, body: dict[str, Any]) -> Response:
        gates = _gates(run_id)
        if not gates or gates[0].key != body.get("key"):
            return JSONResponse({"error": "this page was answered already or the run moved on; "
                                 "reload for its current page"}, status_code=409)
        gate = gates[0]
        sent = {int(r["row_id"]): r for r in body.get("rows", []) if "row_id" in r}
        rows, refused = [], {}
        for row in gate.rows:
            given = sent.get(row.row_id, {})
            values = {k: str(given[k]) for k in ("decision", "caption", "alt_text", "keywords",
                                                  "subject", "web_file_name", "note") if k in given}
            answer = row.model_copy(update=values)
            if answer.decision not in ("undecided", "approve", "reject", "regenerate"):
                return JSONResponse({"error": f"unknown decision {answer.decision!r}"},
                                    status_code=400)
            if answer.decision != "reject":
                checked = check_row(row.row_id, answer.model_dump(), settings)
                if checked["errors"]:
                    refused[str(row.row_id)] = checked["errors"]
            rows.append(answer.model_dump())
        if refused:
            return JSONResponse({"error": "some edits do not pass the checks; nothing was sent",
                                 "refused": refused}, status_code=422)
        run_input = {"rows": rows, "bulk": BULK_NONE, "end_review": bool(body.get("end_review")),
                     "reviewer": str(body.get("reviewer", ""))[:255]}
        answer_gate(gate, run_input)
        return JSONResponse({"sent": len(rows), "decided": _decided(rows), "key": gate.key})

    routes = [
        Route("/", index),
        Route("/gate/{run_id}", gate_page),
        Route("/photo/{row_id}", photo),
        Route("/api/gate/{run_id}/state", state),
        Route("/api/gate/{run_id}/check", check, methods=["POST"]),
        Route("/api/gate/{run_id}/submit", submit, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(TokenGuard, token=token)
    return app


def _prefect_ui() -> str | None:
    from prefect.settings import PREFECT_UI_URL

    return (PREFECT_UI_URL.value() or "").rstrip("/") or None


def page_address(settings: Settings, host: str, port: int, token: str | None,
                 path: str = "/") -> str:
    """What to open: ``path`` on the page (at its configured public address, if any),
    with the token for the first visit."""
    base = settings.review.web_url.rstrip("/") if settings.review.web_url else None
    if base is None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        base = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"
    return f"{base}{path}" + (f"?{urlencode({'token': token})}" if token else "")


class ReviewServer:
    """The review page on uvicorn: ``run()`` blocks (Ctrl-C stops it); ``url(path)``."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None) -> None:
        import uvicorn

        self.settings = settings
        self.host = host or settings.review.web_host
        self.port = port or settings.review.web_port
        self.token = resolve_token(settings)
        if self.token is None and not is_loopback(self.host):
            raise ReviewPageError(
                f"the review page would listen on {self.host}, beyond this machine, without a "
                "token: set review.web_token (GALLERYFLOW_REVIEW__WEB_TOKEN) or "
                "review.web_token_block, or bind to 127.0.0.1")
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(settings, self.token), host=self.host, port=self.port, log_level="warning"))

    def url(self, path: str = "/") -> str:
        return page_address(self.settings, self.host, self.port, self.token, path)

    def run(self) -> None:
        self.server.run()

    def start_in_thread(self) -> threading.Thread:
        """Serve from a daemon thread (``galleryflow serve``: beside the deployments)."""
        from galleryflow.review.answer import with_api_context

        thread = threading.Thread(target=with_api_context(self.server.run), name="review-page",
                                  daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.server.should_exit = True
