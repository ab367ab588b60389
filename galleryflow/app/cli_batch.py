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
from typing import Annotated

import typer
from rich.table import Table

from galleryflow.app.terminal import terminal_console

batch_app = typer.Typer(help="One-off batch image jobs: resize, convert, compress, watermark, "
                             "thumbnail (images and videos), with presets.",
                        no_args_is_help=True)
console = terminal_console()
err = terminal_console(stderr=True)


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
) -> None:
    """Run a batch job here, with a progress bar, and print its report."""
    from galleryflow.batch.presets import BatchRequest, PresetError, parse_param_pairs, resolve

    try:
        parameters = parse_param_pairs(param or [])
        resolve(operation, preset, parameters)
    except PresetError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    request = BatchRequest(input_pattern=input_pattern, operation=operation,
                           output_directory=output, parameters=parameters, preset=preset)
    summary = _run_with_bar(request)
    if summary is None:
        raise typer.Exit(1)
    _print_report(summary["id"])
    raise typer.Exit(1 if summary["status"] == "failed" else 0)


def _run_with_bar(request) -> dict | None:  # type: ignore[no-untyped-def]
    from flows.batch import BatchJobError, run_batch_job
    from galleryflow.batch.presets import PresetError
    from galleryflow.app.terminal import ProgressBars

    try:
        with ProgressBars(console):
            return run_batch_job(request)
    except (PresetError, BatchJobError) as exc:
        err.print(f"[red]batch job failed:[/red] {exc}")
        return None


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
    if as_json:
        typer.echo(json.dumps([j.model_dump(mode="json") for j in jobs], indent=2))
        return
    if not jobs:
        console.print("no batch jobs yet")
        return
    table = Table("id", "operation", "preset", "status", "progress", "done", "failed", "total",
                  "seconds", title="batch jobs")
    for j in jobs:
        table.add_row(j.id, j.operation, j.preset or "", _coloured(j.status), f"{j.progress:.0f}%",
                      str(j.completed), str(j.failed), str(j.total), f"{j.duration or 0:.1f}")
    console.print(table)


def _coloured(status: str) -> str:
    colour = {"completed": "green", "partial": "yellow", "stale": "yellow", "failed": "red",
              "crashed": "red"}.get(status, "cyan")
    return f"[{colour}]{status}[/{colour}]"


def _print_report(job_id: str, limit: int = 50) -> None:
    from galleryflow.batch.status import get_job

    job = get_job(job_id)
    console.print(
        f"job [bold]{job.id}[/bold]: {job.operation}"
        + (f" (preset {job.preset})" if job.preset else "")
        + f" → {job.output_directory}: {_coloured(job.status)}, {job.completed} done"
        + (f" ({job.skipped} already done)" if job.skipped else "")
        + f", {job.failed} failed of {job.total} in {job.duration or 0:.1f} s"
    )
    if job.error:
        console.print(f"[red]{job.error}[/red]")
    files = job.files or []
    shown = [f for f in files if f.status == "failed" or f.note][:limit]
    if shown:
        table = Table("file", "status", "output", "detail")
        for f in shown:
            table.add_row(f.input.rsplit("/", 1)[-1], _coloured("failed" if f.status == "failed"
                                                                else "completed"),
                          (f.output or "").rsplit("/", 1)[-1], f.error or f.note or "")
        console.print(table)
        if len(shown) < sum(1 for f in files if f.status == "failed" or f.note):
            console.print(f"… more in `galleryflow batch status {job.id} --json`")


def mcp_command() -> None:
    """Serve galleryflow's batch tools to an AI assistant over MCP (stdio)."""
    from galleryflow.app.mcp_server import main

    main()
