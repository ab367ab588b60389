"""The ``galleryflow`` command line (typer + rich).

Flows run in this process against the configured Prefect API (or Prefect's
embedded server when none is configured), with a progress bar per stage.

Commands import what they run inside their own body (flows, Prefect's client, the DB):
`galleryflow --help` and a mistyped option answer at once instead of after the
seconds it takes to import Prefect and every stage. No import here is placed to
avoid a cycle; `lint-imports` checks the layers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from galleryflow.core.settings import get_settings
from galleryflow.app.terminal import ProgressBars, terminal_console

app = typer.Typer(
    name="galleryflow",
    help="Photo sets to a published web gallery: AI drafts, a person approves.",
    no_args_is_help=True,
    add_completion=False,
)
console = terminal_console()


def _terminal_reviewer(bars: "ProgressBars"):  # type: ignore[no-untyped-def]
    """Gate listener for `run`/`demo` without --approve-all: answer here, or elsewhere.

    In a terminal the rows are shown and decided at a prompt (sent through the
    Prefect API like the UI's form). Otherwise the run waits, and says how to
    answer from the Prefect UI or `galleryflow review` (both need a Prefect
    server: the embedded one lives only inside this process).
    """
    import threading

    from galleryflow.review.answer import with_api_context, answer_gate, wait_for_gate

    def listener(flow_run_id: str | None, key: str, rows: int) -> None:
        if flow_run_id is None:
            return

        def answer() -> None:
            gate = wait_for_gate(flow_run_id, key=key)
            if gate is None:
                return
            bars.progress.stop()
            console.print(_gate_table(gate))
            if console.is_terminal:
                answer_gate(gate, _interactive_answer(gate, reviewer=""))
            else:
                console.print(f"Review gate open ({rows} rows): answer it in the Prefect UI, on the "
                              f"review page ({get_settings().review.page_url}/gate/{flow_run_id}) or "
                              f"with `galleryflow review {flow_run_id}` (all three need a Prefect server).")
            bars.progress.start()

        threading.Thread(target=with_api_context(answer), name=f"review-{key}", daemon=True).start()

    return listener


def _run_process_sets(set_dirs: list[Path], location: str | None, subject: str | None,
                      strict: bool | None, approve_all: bool = False) -> Any:
    from flows.gate import GateStopped, add_gate_listener, remove_gate_listener
    from galleryflow.review.answer import auto_approver
    from flows.runners import process_sets  # the configured task runner and hooks

    logging.getLogger("prefect").setLevel(logging.WARNING)
    with ProgressBars() as bars:
        listener = auto_approver(report=lambda gate, what: bars.progress.console.print(
            f"Answered review gate {gate.key} (--approve-all): {what}.")) if approve_all \
            else _terminal_reviewer(bars)
        add_gate_listener(listener)
        try:
            state = process_sets(
                [str(p) for p in set_dirs], location=location, subject=subject, strict=strict,
                return_state=True,
            )
        except GateStopped as exc:  # cancelled while the gate waited: nothing was published
            console.print(f"[yellow bold]Run stopped[/]: {exc}. Decisions already sent are kept; "
                          "the other rows wait for `galleryflow review` / review-publish.")
            raise typer.Exit(1) from None
        finally:
            remove_gate_listener(listener)
    return state


def _print_run_result(state: Any) -> None:
    from tasks.validate import SetValidationError

    try:
        summary = state.result()
    except SetValidationError as exc:
        console.print("[red bold]Validation failed[/]: nothing was written.")
        _print_validation(exc.report)
        raise typer.Exit(2)
    except Exception as exc:
        console.print(f"[red bold]Run failed[/]: {exc}")
        _print_status(None, None)
        raise typer.Exit(1)
    _print_status(summary.flow_run_id, None)
    for s in summary.sets:
        if s.changed:
            console.print(f"[yellow bold]{s.name}: {len(s.changed)} photo(s) changed since the "
                          f"last run[/] (re-exported under the same name): {', '.join(s.changed)}. "
                          "Each is a new photo for review; the earlier versions keep their own "
                          "bytes (and, if published, stay on the site).")


def _print_validation(report: Any) -> None:
    table = Table(title="Validation", show_lines=False)
    for column in ("set", "file", "verdict", "format", "size", "messages"):
        table.add_column(column)
    for row in report.rows():
        style = {"excluded": "red", "ignored": "dim"}.get(row["verdict"], "")
        table.add_row(*row.values(), style=style)
    console.print(table)
    for line in report.faults_text().splitlines():
        console.print(f"[red]✗[/] {line}")


def _use_local_server(start: bool = True) -> Any:
    """Without a configured Prefect server: this home's background server (started
    when ``start`` and none runs), so no command waits for a temporary one; None
    when a server is configured, the setting is off or it could not start."""
    from galleryflow.app import local_server

    try:
        return local_server.use(start=start)
    except (local_server.LocalServerError, TimeoutError) as exc:
        console.print(f"[yellow]{exc}: using a temporary Prefect server for this command.[/]")
        return None


def _server_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _start_on_server(set_dirs: list[Path], parameters: dict[str, Any], wait: bool,
                     approve_all: bool = False) -> bool:
    """Start the urgent deployment for these sets; False when it is not deployed.

    ``wait``: follow the run to its end, saying when it waits at the review gate and where
    to answer; ``approve_all``: answer each page of the gate by approving every row whose
    proof passed (through the API, as `galleryflow review --approve-all` does).
    """
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    settings = get_settings()
    try:
        flow_run = run_deployment(
            settings.watch.urgent_deployment, timeout=0,
            parameters={"set_dirs": [str(p.resolve()) for p in set_dirs], "intake_dir": None,
                        **parameters},
        )
    except ObjectNotFound:
        return False
    from prefect.settings import PREFECT_UI_URL

    console.print(f"Started run {flow_run.name} ({flow_run.id}) of {settings.watch.urgent_deployment}: "
                  f"a worker of its work pool runs it, not this process.")
    if PREFECT_UI_URL.value():
        console.print(f"Watch it and answer its review gate at {PREFECT_UI_URL.value()}/runs/flow-run/{flow_run.id}")
    console.print(f"or from here: galleryflow review {flow_run.id}")
    if wait or approve_all:
        state = _follow(str(flow_run.id), flow_run.name, approve_all)
        console.print(f"Run {flow_run.name} ended {state.name}.")
        _print_status(str(flow_run.id), None)
        if not state.is_completed():
            raise typer.Exit(1)
    return True


def _follow(run_id: str, name: str, approve_all: bool) -> Any:
    """Wait for a run on the server to end; say when it waits at the review gate (or
    answer it, with ``approve_all``). Returns its final state."""
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_UI_URL

    from galleryflow.review.answer import answer_gate, build_answer, describe_answer, wait_for_gate

    seen: set[str] = set()
    page_url = get_settings().review.page_url
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(UUID(run_id)).state
            if state and state.is_final():
                return state
            key = state.state_details.pause_key if state and state.is_paused() else None
            if key and key not in seen:
                gate = wait_for_gate(run_id, key=key, timeout=30)
                if gate is not None:
                    seen.add(key)
                    if approve_all:
                        answer = build_answer(gate, approve_all=True,
                                              reviewer="galleryflow --approve-all")
                        answer_gate(gate, answer)
                        console.print(f"Answered {key}: {describe_answer(gate, answer)}.")
                    else:
                        ui = PREFECT_UI_URL.value()
                        console.print(
                            f"[bold]Run {name} waits at the review gate[/] ({key}, {len(gate.rows)} "
                            "photos). Answer it "
                            + (f"in the Prefect UI ({ui}/runs/flow-run/{run_id} → Resume), " if ui else "")
                            + f"on the review page ({page_url}/gate/{run_id}, with `galleryflow "
                            f"review --web` running) or here: galleryflow review {run_id}")
            time.sleep(2)


@app.command()
def run(
    set_dirs: Annotated[list[Path], typer.Argument(help="Set folders (one shoot each).")],
    location: Annotated[Optional[str], typer.Option(help="Where the sets were shot.")] = None,
    subject: Annotated[Optional[str], typer.Option(help="What the sets are about.")] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict/--lenient",
                                                   help="A bad file fails its set.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="With a Prefect server: wait for the run to end.")] = False,
    here: Annotated[bool, typer.Option("--here", help="Run in this process even when a server is configured.")] = False,
    approve_all: Annotated[bool, typer.Option("--approve-all",
                                              help="Approve every row whose proof passed at the gate "
                                                   "(on a server: waits for the run and answers it).")] = False,
) -> None:
    """Start process-sets on SET_DIR....

    With a Prefect server configured (PREFECT_API_URL) and `galleryflow setup` done,
    the sets go to the urgent deployment and a worker runs them; answer the gate
    in the UI, on the review page or with `galleryflow review` (--approve-all answers
    it from here). Otherwise (or with --here) the flow runs in this process, gate
    included. Either way the command says where the run executes.
    """
    _unpublished_notice([p.expanduser().resolve().name for p in set_dirs])
    server = _server_configured()
    if server and not here:
        params = {"location": location, "subject": subject, "strict": strict}
        if _start_on_server(set_dirs, params, wait, approve_all):
            return
        console.print("[yellow]No process-sets deployment on the server[/] (run `galleryflow setup`): "
                      "running in this process instead.")
    console.print(_where_here(server, None if server else _use_local_server()))
    state = _run_process_sets(set_dirs, location, subject, strict, approve_all)
    _print_run_result(state)


def _where_here(server: bool, local: Any = None) -> str:
    """Where a run in this process executes, and what that means for its review gate."""
    if local is not None:
        return (f"Running process-sets in this process, on this home's background Prefect server "
                f"at {local.ui_url}: its review gate is answered here, in the Prefect UI there, "
                "with `galleryflow review` or on the review page. The server stays for the next "
                "command (`galleryflow server stop` stops it).")
    if server:
        from prefect.settings import PREFECT_API_URL

        return (f"Running process-sets in this process, against the Prefect server at "
                f"{PREFECT_API_URL.value()}: it shows in the UI, and stops if this command does.")
    return ("Running process-sets in this process, on Prefect's embedded server (no PREFECT_API_URL "
            "configured): its review gate is answered here; the Prefect UI, `galleryflow review` and "
            "the review page need a Prefect server (docs/operations.md).")


@app.command()
def demo(
    approve_all: Annotated[bool, typer.Option("--approve-all",
                                              help="Answer the review gate by approving every passing row.")] = False,
    megapixels: Annotated[float, typer.Option(help="Size of the generated sample photos.")] = 6.0,
) -> None:
    """Generate sample sets and run the whole pipeline on them."""
    import os

    from galleryflow.intake.samples import demo_sets
    from galleryflow.core.settings import reset_settings

    # No vision model can be assumed on a fresh machine: the demo lets the offline
    # captioner stand in when no Ollama answers (marked `offline` in every proof).
    os.environ.setdefault("GALLERYFLOW_OLLAMA__OFFLINE_ALLOWED", "true")
    reset_settings()
    settings = get_settings()
    settings.ensure_dirs()
    samples = settings.home / "samples"
    if not samples.exists():
        console.print(f"Generating sample sets in {samples} …")
    folders = [samples / n for n in ("alpine-lakes", "harbour-evening")]
    if not all(f.is_dir() for f in folders):
        folders = demo_sets(samples, megapixels=megapixels)
    local = _use_local_server()
    console.print(f"Running process-sets on {', '.join(f.name for f in folders)} "
                  f"(home: {settings.home})")
    if local is not None:
        console.print(_where_here(False, local))
    state = _run_process_sets(folders, location=None, subject=None, strict=None,
                              approve_all=approve_all)
    _print_run_result(state)
    console.print(f"\nState DB:        {settings.db_url}\nIncoming copies: {settings.incoming_dir}"
                  f"\nPublished site:  {settings.site_dir} (open index.html)"
                  f"\nGallery DB:      {settings.gallery_db_url}")


def _state_db_ready() -> bool:
    """The state DB exists (migrated on the way); False on a fresh install."""
    from galleryflow.db import migrate
    from galleryflow.db.engine import is_up_to_date

    settings = get_settings()
    if settings.db_url.startswith("sqlite") and not Path(settings.db_url.split("///")[-1]).exists():
        return False
    if not is_up_to_date(settings.db_url):
        migrate(settings.db_url)
    return True


def _unpublished_notice(set_names: list[str]) -> None:
    """`run` on a set with approved rows an earlier publish did not finish: say so."""
    from tasks.publish import publishable_row_ids

    try:
        if not _state_db_ready():
            return
        waiting = publishable_row_ids(set_keys=set_names)
    except Exception as exc:  # a notice must never keep a run from starting
        console.print(f"[dim](could not check for unpublished rows: {type(exc).__name__})[/]")
        return
    if waiting:
        console.print(f"[yellow bold]{len(waiting)} approved row(s)[/] of {', '.join(set_names)} "
                      "are not published yet (an earlier publish was interrupted). Finish them "
                      f"with:  galleryflow publish {' '.join(set_names)}")


@app.command()
def recover() -> None:
    """Roll back sessions whose run died (process gone, or Prefect says it crashed),
    with their ledger applied, partial files removed and intake claims released."""
    from tasks.recovery import recover as recover_sessions

    if not _state_db_ready():
        console.print("Nothing to recover: no state database yet.")
        return
    report = recover_sessions()
    for line in report.lines():
        console.print(f"[yellow]•[/] {line}")
    if not report.anything:
        console.print("Nothing to recover: no session of a dead run, nothing left behind.")


@app.command()
def publish(
    sets: Annotated[Optional[list[str]], typer.Argument(help="Set names (default: every set).")] = None,
) -> None:
    """Finish approved, unpublished rows in this process (no Prefect server or
    deployment needed): what an interrupted publish left is published, resumed
    upload by upload; dead sessions are recovered first."""
    from flows.fanout import publish_approved
    from galleryflow.publishing.summary import PublishIncomplete
    from tasks.publish import publishable_row_ids
    from tasks.recovery import recover as recover_sessions

    logging.getLogger("prefect").setLevel(logging.WARNING)
    if not _state_db_ready():
        console.print("Nothing to publish: no state database yet.")
        return
    for line in recover_sessions().lines():
        console.print(f"[yellow]•[/] {line}")
    ids = publishable_row_ids(set_keys=sets or None)
    if not ids:
        console.print("Nothing to publish: no approved row is waiting"
                      + (f" in {', '.join(sets)}." if sets else "."))
        return
    console.print(f"Publishing {len(ids)} approved row(s) …")
    try:
        summary = publish_approved(ids)
    except PublishIncomplete as exc:
        console.print(f"[red bold]Publish incomplete[/]: {exc}. Rows left approved; run "
                      "`galleryflow publish` again once the cause is fixed.")
        raise typer.Exit(1) from None
    for outcome in summary.outcomes:
        style = {"ok": "green", "failed": "red"}.get(outcome.outcome, "dim")
        console.print(f"[{style}]{outcome.outcome:8}[/] {outcome.file}: {outcome.message}")
    if any(o.outcome == "failed" for o in summary.outcomes):
        raise typer.Exit(1)


def _status_data(run_id: str | None) -> dict[str, Any]:
    from sqlalchemy import select

    from collections import Counter

    from galleryflow.core.status import RowStatus
    from galleryflow.db import ImageSet, Photo, session_scope
    from galleryflow.db.engine import is_up_to_date

    settings = get_settings()
    if not Path(settings.db_url.split("///")[-1]).exists() and settings.db_url.startswith("sqlite"):
        return {"sets": [], "rows": []}
    if not is_up_to_date(settings.db_url):
        from galleryflow.db import migrate

        migrate(settings.db_url)
    with session_scope() as db:
        query = select(ImageSet).order_by(ImageSet.id)
        if run_id:
            query = query.where(ImageSet.flow_run_id == run_id)
        sets = list(db.scalars(query))
        if not run_id and sets:
            latest = sets[-1].flow_run_id
            sets = [s for s in sets if s.flow_run_id == latest] if latest else sets[-1:]
        keys = {s.set_key for s in sets}
        rows = list(db.scalars(select(Photo).where(Photo.set_key.in_(keys))
                               .order_by(Photo.set_key, Photo.original_name))) if keys else []
        waiting = Counter(r.set_key for r in rows if r.status == RowStatus.AWAITING_REVIEW)
        return {
            "sets": [
                {"image_set_id": s.id, "set": s.name, "status": _set_status(s.status, waiting[s.set_key]),
                 "awaiting_review": waiting[s.set_key], "flow_run_id": s.flow_run_id,
                 "images": s.image_count, "excluded": s.excluded_count, "error": s.error,
                 "stage_seconds": s.stage_seconds or {},
                 "started_at": s.started_at.isoformat() if s.started_at else None}
                for s in sets
            ],
            "rows": [_row_dict(r) for r in rows],
        }


def _set_status(status: str, waiting: int) -> str:
    """A set whose stages are done but whose photos still wait for a person is not
    finished: it is awaiting review (paused at the gate, or left for review-publish)."""
    from galleryflow.core.status import SetStatus

    return SetStatus.AWAITING_REVIEW.value if status == SetStatus.COMPLETED and waiting else status


STATUS_COLUMNS = ("file", "status", "proof", "taken", "camera", "size",
                  "aesthetic", "brisque", "blur", "caption")


def _row_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "set": row.set_key, "file": row.original_name, "status": row.status,
        "proof": row.proof_status,
        "taken_at": row.taken_at.isoformat(sep=" ") if row.taken_at else None,
        "taken": row.taken_at.strftime("%m-%d %H:%M") if row.taken_at else None,
        "camera": row.camera_model or row.camera_make,
        "size": f"{row.width}×{row.height}" if row.width else None,
        "gps": [row.gps_lat, row.gps_lon] if row.gps_lat is not None else None,
        "brisque": row.brisque_score, "brisque_source": row.brisque_source,
        "aesthetic": row.clip_aesthetic_score, "aesthetic_source": row.clip_aesthetic_source,
        "blur": row.blur_score, "caption": row.caption, "web_file_name": row.web_file_name,
        "sha256": row.sha256,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _print_status(run_id: str | None, as_json: bool | None) -> None:
    data = _status_data(run_id)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    if not data["sets"]:
        console.print("No sets processed yet.")
        return
    sets = Table(title="Sets")
    for column in ("session", "set", "status", "images", "excluded", "stages (s)", "error"):
        sets.add_column(column)
    for s in data["sets"]:
        stages = " ".join(f"{k}={v:.1f}" for k, v in s["stage_seconds"].items())
        style = "red" if s["status"] in ("rolled_back", "rollback_failed", "failed") else ""
        waiting = s["awaiting_review"]
        shown = (f"awaiting review ({waiting} photo{'s' if waiting != 1 else ''})"
                 if s["status"] == "awaiting_review" else s["status"])
        sets.add_row(str(s["image_set_id"]), s["set"], shown, str(s["images"]),
                     str(s["excluded"]), stages, s["error"] or "", style=style)
    console.print(sets)
    for set_name in dict.fromkeys(r["set"] for r in data["rows"]):
        rows = Table(title=f"{set_name}: rows, best aesthetic score first")
        for column in STATUS_COLUMNS:
            rows.add_column(column, overflow="fold", max_width=50 if column == "caption" else None,
                            justify="right" if column in ("aesthetic", "brisque", "blur") else "left")
        ordered = sorted((r for r in data["rows"] if r["set"] == set_name),
                         key=lambda r: (-(r["aesthetic"] or 0), r["file"]))
        for r in ordered:
            rows.add_row(*(_fmt(r[c]) for c in STATUS_COLUMNS))
        console.print(rows)


def _gate_table(gate: Any) -> Table:
    table = Table(title=f"Review gate of run {gate.flow_run_name} ({gate.flow_run_id})")
    for column in ("#", "file", "proof and scores", "caption", "alt text", "keywords", "web file name"):
        table.add_column(column, overflow="fold",
                         max_width=40 if column in ("caption", "alt text", "proof and scores") else None)
    for i, row in enumerate(gate.rows, 1):
        # Escaped: a caption's "[...]" is text, not Rich markup.
        table.add_row(str(i), *(escape(x) for x in (row.file, row.summary, row.caption, row.alt_text,
                                                    row.keywords, row.web_file_name)))
    return table


# The prompt's shortcut letters stand in square brackets, which Rich would take for
# markup and drop ("pprove, eject…"): escaped, they print as typed.
ROW_PROMPT = escape("  [a]pprove, [r]eject, re[g]enerate, [e]dit caption, [v]iew photo, [s]kip")
EDITED_PROMPT = escape("  then [a]pprove or [s]kip")


def _show_photo(row_id: int) -> None:
    """Open the row's photo in the system viewer, or say where to see it."""
    import os
    import shutil
    import subprocess
    import sys

    from galleryflow.db import Photo, session_scope
    from galleryflow.review.page import image_source

    with session_scope() as db:
        row = db.get(Photo, row_id)
        source = image_source(row) if row is not None else None
    opener = shutil.which("open" if sys.platform == "darwin" else "xdg-open")
    display = sys.platform == "darwin" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if source is not None and opener and display:
        subprocess.Popen([opener, str(source)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        console.print(f"  opened {escape(str(source))} in the system viewer")
        return
    url = f"{get_settings().review.page_url}/photo/{row_id}?size=large"
    console.print(f"  photo: {url}  (while `galleryflow review --web` runs)"
                  + (f"\n  file:  {escape(str(source))}" if source is not None else ""))


def _interactive_answer(gate: Any, reviewer: str) -> dict[str, Any]:
    from rich.prompt import Prompt

    from galleryflow.review.answer import build_answer

    answer = build_answer(gate, reviewer=reviewer)
    choices = {"a": "approve", "r": "reject", "g": "regenerate", "s": "undecided"}
    console.print(f"Review page for this gate: {get_settings().review.page_url}/gate/{gate.flow_run_id} "
                  "(with `galleryflow review --web` running)")
    for row in answer["rows"]:
        console.print(f"\n[bold]{escape(row['file'])}[/]\n  {escape(row['summary'])}"
                      f"\n  caption:  {escape(row['caption'])}\n  alt text: {escape(row['alt_text'])}"
                      f"\n  keywords: {escape(row['keywords'])}\n  subject:  {escape(row.get('subject', ''))}"
                      f"\n  file:     {escape(row['web_file_name'])}")
        pick = Prompt.ask(ROW_PROMPT, choices=["a", "r", "g", "e", "v", "s"], default="s", console=console)
        while pick == "v":
            _show_photo(row["row_id"])
            pick = Prompt.ask(ROW_PROMPT, choices=["a", "r", "g", "e", "v", "s"], default="s",
                              console=console)
        if pick == "e":
            row["caption"] = Prompt.ask("  new caption", default=row["caption"], console=console)
            pick = Prompt.ask(EDITED_PROMPT, choices=["a", "s"], default="a", console=console)
        row["decision"] = choices[pick]
    return answer


@app.command()
def review(
    run_id: Annotated[Optional[str], typer.Argument(help="The paused flow run (default: every paused gate).")] = None,
    approve_all: Annotated[bool, typer.Option("--approve-all", help="Approve every row whose proof passed.")] = False,
    approve: Annotated[Optional[list[str]], typer.Option("--approve", help="Approve this file (repeatable).")] = None,
    reject: Annotated[Optional[list[str]], typer.Option("--reject", help="Reject this file (repeatable).")] = None,
    reviewer: Annotated[str, typer.Option(help="Your name, for the record.")] = "",
    end: Annotated[bool, typer.Option("--end", help="End the review after this page.")] = False,
    web: Annotated[bool, typer.Option("--web", help="Serve the review page (photos, keyboard) instead.")] = False,
    host: Annotated[Optional[str], typer.Option(help="--web: address to bind (default review.web_host, "
                                                     "127.0.0.1; another needs review.web_token).")] = None,
    port: Annotated[Optional[int], typer.Option(help="--web: port (default review.web_port, 8765).")] = None,
) -> None:
    """Show a paused run's review gate and answer it (same input as the Prefect UI).

    With --web: serve the review page, where every open gate's photos are shown large
    enough to judge and a page is worked through from the keyboard.
    """
    from galleryflow.review.answer import answer_gate, build_answer, describe_answer, open_gates

    if web:
        _serve_review_page(host, port, run_id)
        return

    _use_local_server(start=False)  # a run of this home waits on its background server
    gates, formless = open_gates(run_id)
    for lost in formless:
        console.print(f"[yellow]Run {lost.flow_run_name} ({lost.flow_run_id}) is paused at review gate "
                      f"{lost.key or '?'} but its form is not stored on the Prefect server.[/] "
                      "The gate stores it again at its next poll; run this command again in a "
                      "moment. If it stays missing, the run's worker is gone: cancel the run and "
                      "use `galleryflow recover`.")
    if not gates:
        if formless:
            raise typer.Exit(1)
        console.print("No review gate is open" + (f" for run {run_id}." if run_id else "."))
        raise typer.Exit(1 if run_id else 0)
    for gate in gates:
        console.print(_gate_table(gate))
        if approve_all or approve or reject:
            answer = build_answer(gate, approve_all=approve_all, approve=set(approve or []),
                                  reject=set(reject or []), reviewer=reviewer, end_review=end)
        elif console.is_terminal:
            answer = _interactive_answer(gate, reviewer)
        else:
            console.print("Not a terminal: pass --approve-all, --approve FILE or --reject FILE.")
            raise typer.Exit(2)
        answer_gate(gate, answer)
        # The gate applies the bulk choice to the rows left undecided, against the proof
        # in the DB; the cards' summaries say which of them passed.
        console.print(f"Answered run {gate.flow_run_name} ({gate.flow_run_id}), page {gate.key}: "
                      f"{describe_answer(gate, answer)}.")


def _serve_review_page(host: str | None, port: int | None, run_id: str | None) -> None:
    from galleryflow.app.review_web import ReviewPageError, ReviewServer
    from galleryflow.db import migrate

    settings = get_settings()
    migrate(settings.db_url)
    try:
        server = ReviewServer(settings, host, port)
    except ReviewPageError as exc:
        console.print(f"[red bold]review page not started[/]: {escape(str(exc))}")
        raise typer.Exit(2) from None
    _use_local_server()  # the gates of this home's runs are on its background server
    if not _server_configured():
        console.print("[yellow]No Prefect server configured[/] (PREFECT_API_URL): the page sees only "
                      "gates of runs on a server; a run in another process's embedded server is "
                      "answered there (docs/operations.md).")
    console.print(f"Review page: {server.url(f'/gate/{run_id}' if run_id else '/')}\n"
                  f"[dim]Ctrl-C stops it. Keys: j/k next/previous, a approve, r reject, g regenerate, "
                  f"u undecided, e edit, v larger photo, Ctrl+Enter submit.[/]")
    server.run()


@app.command()
def status(
    run_id: Annotated[Optional[str], typer.Argument(help="A flow run id (default: the latest run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show sets, rows and their statuses."""
    _print_status(run_id, as_json)


from galleryflow.app.cli_batch import batch_app, mcp_command  # noqa: E402

app.add_typer(batch_app, name="batch")
app.command("mcp", help="Serve the batch tools to an AI assistant (MCP over stdio).")(mcp_command)

from galleryflow.app.cli_ops import register as _register_ops  # noqa: E402  (setup, serve, watch)
_register_ops(app)


def main() -> None:  # pragma: no cover - console script entry point
    """``galleryflow`` started cold (the console script is :mod:`galleryflow.app.warm`,
    which hands batch commands to a warm process when there is one): the command, then
    an exit that skips the interpreter's teardown."""
    import os

    os._exit(run_app())


_made: tuple[Any, Any] | None = None  # (the app, its click command)


def command() -> Any:
    """The click command typer makes of :data:`app`, made once per process.

    ``app()`` makes it again at every call: ~22 ms of evaluating every command's
    annotations, a third of what a warm ``batch process`` spends before its job
    starts. Made once, it is also made once for all the commands a warm process
    forks (``galleryflow.app.warm``). (Called so, an unexpected error prints Python's
    own traceback rather than typer's shortened one.) Anything else standing in for
    ``app`` (a test's) is called as it is."""
    global _made
    if not isinstance(app, typer.Typer):
        return app
    if _made is None or _made[0] is not app:
        _made = (app, typer.main.get_command(app))
    return _made[1]


def run_app(argv: list[str] | None = None) -> int:
    """The command (``argv``, default ``sys.argv[1:]``), and everything an exit must do
    but the interpreter's teardown; its exit status.

    Tearing down an interpreter that has imported Prefect, SQLAlchemy and Pillow, with
    Prefect's daemon threads still polling, took ~1 s (up to 6 s on a busy machine)
    after the command had finished. So the exit handlers are run here (Prefect's log
    and event workers flush, logging shuts down) and the output is flushed, and the
    caller ends the process with ``os._exit``. A non-daemon thread still at work is
    waited for first, as the normal exit would.
    """
    import atexit
    import sys
    import threading

    from galleryflow.core.memory import reuse_freed_memory

    reuse_freed_memory()  # a run or batch job reuses its photos' buffers (core.memory)
    try:
        if argv is None:
            command()()
        else:
            command()(args=argv)
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    from galleryflow.core import workers

    workers.shutdown()  # its idle threads would be waited for below, forever
    for thread in threading.enumerate():
        if thread.is_alive() and not thread.daemon and thread is not threading.main_thread():
            thread.join()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): said on stderr, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
