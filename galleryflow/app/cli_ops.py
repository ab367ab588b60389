"""Operations commands: ``galleryflow setup``, ``serve`` and ``watch``.

Registered on the main CLI by :func:`register` (see the end of ``cli.py``).

Commands import what they run inside their own body (flows, Prefect's client, the DB):
`galleryflow --help` and a mistyped option answer at once instead of after the
seconds it takes to import Prefect and every stage. No import here is placed to
avoid a cycle; `lint-imports` checks the layers.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from galleryflow.core.settings import get_settings

console = Console(width=None if Console().is_terminal else 160)


def _configure_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    for name in ("galleryflow", "tasks", "flows"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        if not any(isinstance(h, RichHandler) for h in logger.handlers):
            logger.addHandler(handler)
        logger.propagate = False


def setup(
    no_deploy: Annotated[bool, typer.Option("--no-deploy", help="Only the work pool, limits and blocks.")] = False,
) -> None:
    """Prepare the Prefect server: work pool, queues, limits, blocks, deployments.

    Against the configured Prefect API: the work pool and its queues with their
    priorities, the global concurrency limits, the blocks, then every deployment
    in prefect.yaml. Safe to run again.
    """
    from galleryflow.app.setup import SetupError, run_setup

    settings = get_settings()
    try:
        report = run_setup(settings, echo=lambda line: console.print(f"[dim]{line}[/]"),
                           deploy_flows=not no_deploy)
    except SetupError as exc:
        console.print(f"[red bold]setup failed[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(f"Prefect API: {report.api_url}")
    for line in report.actions:
        console.print(f"[green]✓[/] {line}")
    for line in report.unchanged:
        console.print(f"[dim]= {line}[/]")
    for name in report.deployed:
        console.print(f"[green]✓[/] deployment {name}")
    for line in report.skipped:
        console.print(f"[yellow]– skipped[/] {line}")
    pool = _pool_name(settings)
    console.print(f"\nNext: start a worker with  [bold]prefect worker start --pool {pool}[/]")


def _pool_name(settings) -> str:  # type: ignore[no-untyped-def]
    from galleryflow.app.deployments import load_project

    try:
        return load_project(settings).work_pool.name
    except Exception:
        return "galleryflow"


def serve(
    limit: Annotated[Optional[int], typer.Option(help="Most flow runs at once (default: no limit).")] = None,
) -> None:
    """Serve every deployment, with its schedules, from this one process.

    The single-machine alternative to setup + worker: no work pool, no worker.
    Ctrl-C stops it.
    """
    from prefect import serve as prefect_serve

    from galleryflow.app.deployments import load_project, remove_pool_deployments, served_deployments

    settings = get_settings()
    project = load_project(settings)
    # Runs start in subprocesses from the project folder: give them this state folder.
    os.environ["GALLERYFLOW_HOME"] = str(settings.home)
    os.chdir(project.root)
    for name in remove_pool_deployments(project):
        console.print(f"[yellow]replaced[/] {name} (it was set up for a work pool)")
    deployments = served_deployments(project)
    for spec in project.available():
        schedules = ", ".join(s.describe() for s in spec.schedules) or "on demand"
        console.print(f"[green]✓[/] {spec.full_name}: {schedules}")
    for spec in project.missing():
        console.print(f"[yellow]– skipped[/] {spec.full_name}: {spec.entry_file} is not in this checkout yet")
    prefect_serve(*deployments, limit=limit)


def watch(
    intake_root: Annotated[Optional[Path], typer.Argument(
        help="Folder holding queue/ and urgent/ (default: settings watch.intake_root or <home>/intake).")] = None,
    polling: Annotated[Optional[bool], typer.Option(
        "--polling/--events", help="Poll the file system (network shares) or use OS events.")] = None,
    quiet_seconds: Annotated[Optional[float], typer.Option(
        help="A set is ready after this long without changes (or with a .ready marker).")] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (for cron).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Watch intake folders and start runs for sets that are ready.

    Ready sets under urgent/ start process-sets/urgent at once; sets under
    queue/ wait for the nightly run. Content already processed is skipped.
    """
    from galleryflow.app.watch import WatchService

    _configure_logging(verbose)
    settings = get_settings()
    if quiet_seconds is not None:
        settings = settings.model_copy(update={"watch": settings.watch.model_copy(
            update={"quiet_seconds": quiet_seconds})})
    service = WatchService(settings, root=intake_root, polling=polling, one_shot=once)
    if once:
        from galleryflow.db import migrate

        migrate(settings.db_url)
        service.resume_pending()
        service.tick()
        return
    stop = threading.Event()
    # systemd and friends stop services with SIGTERM: finish the tick, stop the observer.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        service.run(stop)
    except KeyboardInterrupt:
        stop.set()
        console.print("stopped")


server_app = typer.Typer(help="This home's background Prefect server (used when no server is "
                               "configured; see galleryflow.app.local_server).",
                          no_args_is_help=True)


@server_app.command("status")
def server_status() -> None:
    """Say whether this home's background server runs, and where."""
    from galleryflow.app import local_server

    settings = get_settings()
    if local_server.user_server_configured():
        console.print("A Prefect server is configured (PREFECT_API_URL): no background server is used.")
        return
    state = local_server.running(settings)
    if state is None:
        console.print("No background Prefect server runs for this home; the next `galleryflow run` "
                      "starts one." if settings.ops.local_server else
                      "ops.local_server is off: every command starts a temporary server.")
        return
    console.print(f"Prefect server for {settings.home}: {state.ui_url} (pid {state.pid}, Prefect "
                  f"{state.prefect_version}); stops after {settings.ops.local_server_idle_minutes:g} "
                  "min unused.")


@server_app.command("start")
def server_start() -> None:
    """Start this home's background server now (commands start it when needed)."""
    from galleryflow.app import local_server

    if local_server.user_server_configured():
        console.print("A Prefect server is configured (PREFECT_API_URL): nothing to start.")
        raise typer.Exit(1)
    try:
        state = local_server.ensure()
    except local_server.LocalServerError as exc:
        console.print(f"[red bold]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"Prefect server: {state.ui_url} (pid {state.pid})")


@server_app.command("stop")
def server_stop() -> None:
    """Stop this home's background server (a running flow loses its server: stop it first)."""
    from galleryflow.app import local_server

    state = local_server.stop()
    console.print(f"Stopped the Prefect server at {state.ui_url}." if state else
                  "No background Prefect server was running for this home.")


def register(app: typer.Typer) -> None:
    """Add ``setup``, ``serve``, ``watch`` and ``server`` to the galleryflow CLI."""
    app.command(name="setup")(setup)
    app.command(name="serve")(serve)
    app.command(name="watch")(watch)
    app.add_typer(server_app, name="server")
