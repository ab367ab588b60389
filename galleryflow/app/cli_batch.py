"""``galleryflow batch …`` and ``galleryflow mcp``.

The lead's ``galleryflow/app/cli.py`` registers these::

    from galleryflow.app.cli_batch import batch_app, mcp_command
    app.add_typer(batch_app, name="batch")
    app.command("mcp")(mcp_command)

Commands import what they run inside their own body (flows, Prefect's client, the DB):
`galleryflow --help` and a mistyped option answer at once instead of after the
seconds it takes to import Prefect and every stage. No import here is placed to
avoid a cycle; `lint-imports` checks the layers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from galleryflow.app.terminal import terminal_console

if TYPE_CHECKING:
    from galleryflow.app.batch_jobs import Started

batch_app = typer.Typer(help="One-off batch image jobs: resize, convert, compress, watermark, "
                             "thumbnail (images and videos), with presets.",
                        no_args_is_help=True)
console = terminal_console()
err = terminal_console(stderr=True)


# Exit codes of `batch process` (docs/batch.md): whether the job completed.
EXIT_COMPLETED, EXIT_FAILED, EXIT_REFUSED, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_BY_STATUS = {"completed": EXIT_COMPLETED, "partial": EXIT_PARTIAL}


@batch_app.command("process")
def process(
    input_pattern: Annotated[str, typer.Option("--input", "-i", help="Glob; ** recurses. Quote it.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder.")],
    operation: Annotated[str | None, typer.Option(
        "--operation", help="resize, convert, compress, watermark or thumbnail "
        "(optional with a preset, which names its own).")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="web_optimized, social_media, thumbnail, high_quality or your own.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="key=value, repeatable (width=800 format=webp quality=80 …); "
        "overrides the preset.")] = None,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Print the job id and return at once; the job runs on.")] = False,
) -> None:
    """Start a batch job and follow it with a progress bar, then print its report.

    The job runs in its own process: closing the terminal or Ctrl-C leaves it
    running (`galleryflow batch status ID` follows it). Exit status: 0 every file
    completed, 3 some files failed (partial), 1 the job failed or crashed, 2 the job
    was refused before it started (nothing was written)."""
    from galleryflow.app.batch_jobs import JobRefused, launch
    from galleryflow.batch.presets import BatchRequest, PresetError, parse_param_pairs

    try:
        request = BatchRequest(input_pattern=input_pattern, operation=operation,
                               output_directory=output, parameters=parse_param_pairs(param or []),
                               preset=preset)
        # Followed here: the worker is forked from this process (no second Python
        # start-up) where that is safe; --detach spawns it, nothing to follow.
        started = launch(request, fork=not detach)
    except (PresetError, JobRefused) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_REFUSED) from None
    job_id = started.job_id
    if detach:
        console.print(f"job [bold]{job_id}[/bold] started; follow it with "
                      f"`galleryflow batch status {job_id}`")
        raise typer.Exit(EXIT_COMPLETED)
    try:
        if started.pipe is not None:
            shown = _follow_forked(started)
        else:
            _follow(job_id)
            shown = None
    except KeyboardInterrupt:
        err.print(f"\nthe job keeps running; follow it with `galleryflow batch status {job_id}`")
        raise typer.Exit(130) from None
    final = _print_report(job_id, shown)
    raise typer.Exit(EXIT_BY_STATUS.get(final, EXIT_FAILED))


def _follow(job_id: str, interval: float = 0.2) -> str:
    """A progress bar fed from the job's record until the job ends; its final status."""
    import time

    from galleryflow.app.terminal import ProgressBars
    from galleryflow.batch.status import ACTIVE, get_job

    shown_done = shown_total = 0
    with ProgressBars(console) as bars:
        while True:
            job = get_job(job_id, files=False)
            done = job.completed + job.failed
            bars("batch", max(0, done - shown_done), max(0, job.total - shown_total))
            shown_done, shown_total = max(done, shown_done), max(job.total, shown_total)
            if job.status not in ACTIVE:
                return job.status
            time.sleep(interval)


def _follow_forked(started: "Started") -> dict[str, Any] | None:
    """A progress bar fed by the forked worker's pipe until it exits; the job's report
    as the worker sent it (None: it sent none, the job's record tells). Exits 2 when
    the worker could not record the job."""
    from galleryflow.app.terminal import ProgressBars

    shown: dict[str, Any] | None = None
    refused: str | None = None
    bars: ProgressBars | None = None
    done, total = 0, started.total
    try:
        for kind, text in started.events():
            if kind == "R":
                bars = ProgressBars(console).__enter__()
                bars("batch", 0, total)
            elif kind == "f" and bars is not None:
                done += 1
                grown = max(0, done - total)  # the glob met more files than were counted
                total += grown
                bars("batch", 1, grown)
            elif kind == "X":
                refused = text
            elif kind == "E":
                shown = json.loads(text)
    finally:
        if bars is not None:
            bars.__exit__(None, None, None)
    started.reap()
    if refused:
        err.print(f"[red]error:[/red] {refused}")
        raise typer.Exit(EXIT_REFUSED)
    return shown


@batch_app.command("status")
def status(
    job_id: Annotated[str | None, typer.Argument(help="A job id; none: running and recent jobs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One job with its per-file list, or all running and recent jobs."""
    from galleryflow.batch.status import JobNotFound, get_job, list_jobs

    if job_id:
        try:
            job = get_job(job_id)
        except JobNotFound as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        if as_json:
            typer.echo(job.model_dump_json(indent=2))
        else:
            _print_report(job_id)
        return
    jobs = list_jobs()
    if as_json:  # the same shape as the MCP tool's answer
        typer.echo(json.dumps({"jobs": [j.model_dump(mode="json") for j in jobs]}, indent=2))
        return
    if not jobs:
        console.print("no batch jobs yet")
        return
    table = Table("id", "operation", "preset", "status", "progress", "completed", "failed",
                  "total", "seconds", title="batch jobs")
    for j in jobs:
        table.add_row(j.id, j.operation, j.preset or "", _coloured(j.status), f"{j.progress:.0f}%",
                      str(j.completed), str(j.failed), str(j.total), f"{j.duration or 0:.1f}")
    console.print(table)


def _coloured(status: str) -> str:
    colour = {"completed": "green", "skipped": "green", "partial": "yellow", "stale": "yellow",
              "not processed": "yellow", "failed": "red", "crashed": "red"}.get(status, "cyan")
    return f"[{colour}]{status}[/{colour}]"


def _print_report(job_id: str, shown: dict[str, Any] | None = None, limit: int = 50) -> str:
    """The job's report (``shown``: as its forked worker sent it, else read from the
    job's record); returns the job's status."""
    from types import SimpleNamespace

    if shown is None:
        from galleryflow.app.batch_jobs import report
        from galleryflow.batch.status import JobNotFound, get_job

        try:
            shown = report(get_job(job_id), limit)
        except JobNotFound:
            err.print(f"[red]error:[/red] the job's process ended before it recorded job "
                      f"{job_id} (see its log, batch-{job_id}.log)")
            return "failed"
    job = SimpleNamespace(**shown)
    console.print(
        f"job [bold]{job.id}[/bold]: {job.operation}"
        + (f" (preset {job.preset})" if job.preset else "")
        + f" → {job.output_directory}: {_coloured(job.status)}, {job.completed} completed"
        + (f" ({job.skipped} already done)" if job.skipped else "")
        + f", {job.failed} failed"
        + (f", {job.not_processed} not processed" if job.not_processed else "")
        + f" of {job.total} in {job.duration or 0:.1f} s"
    )
    if job.error:
        console.print(f"[red]{job.error}[/red]")
    shown_files = [SimpleNamespace(**f) for f in job.files[:limit]]
    if shown_files:
        table = Table("file", "status", "output", "detail")
        for f in shown_files:
            table.add_row(f.path.rsplit("/", 1)[-1], _coloured(f.status),
                          (f.output or "").rsplit("/", 1)[-1], f.error or f.note or "")
        console.print(table)
        if job.more_files or len(job.files) > limit:
            console.print(f"… more in `galleryflow batch status {job.id} --json`")
    return str(job.status)


def mcp_command() -> None:
    """Serve galleryflow's batch tools to an AI assistant over MCP (stdio)."""
    from galleryflow.app.mcp_server import main

    main()
