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
from pydantic import SecretStr

from galleryflow.app.terminal import terminal_console
from galleryflow.core.settings import get_settings

console = terminal_console()


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
    connect_site: Annotated[bool, typer.Option(
        "--connect-site", help="Connect the site: ask for the gallery database and SFTP target.")] = False,
    gallery_url: Annotated[Optional[str], typer.Option(
        help="Site: gallery DB SQLAlchemy URL without the password (mysql+pymysql://user@host/db).")] = None,
    gallery_password: Annotated[Optional[str], typer.Option(help="Site: gallery DB password.")] = None,
    gallery_table: Annotated[str, typer.Option(help="Site: gallery table.")] = "gallery",
    gallery_block: Annotated[str, typer.Option(help="Site: name of the GalleryDatabase block.")] = "site-gallery",
    sftp_host: Annotated[Optional[str], typer.Option(help="Site: SFTP server host.")] = None,
    sftp_port: Annotated[int, typer.Option(help="Site: SFTP port.")] = 22,
    sftp_user: Annotated[Optional[str], typer.Option(help="Site: SFTP user name.")] = None,
    sftp_key_file: Annotated[Optional[str], typer.Option(
        help="Site: private key file (on the worker's machine).")] = None,
    sftp_password: Annotated[Optional[str], typer.Option(help="Site: SFTP password (or a key).")] = None,
    remote_base: Annotated[Optional[str], typer.Option(help="Site: folder on the server for the photos.")] = None,
    public_url: Annotated[Optional[str], typer.Option(help="Site: URL that folder is served at.")] = None,
    known_hosts_file: Annotated[Optional[str], typer.Option(
        help="Site: known_hosts file (default ~/.ssh/known_hosts of the user running the worker).")] = None,
    accept_new_host_key: Annotated[bool, typer.Option(
        "--accept-new-host-key", help="Site: trust an unknown host key on first use.")] = False,
    target_block: Annotated[str, typer.Option(help="Site: name of the SftpTarget block.")] = "site",
    config: Annotated[Optional[Path], typer.Option(
        help="Settings file to write the publish section to (default: GALLERYFLOW_CONFIG or ./galleryflow.toml).")] = None,
) -> None:
    """Prepare the Prefect server: work pool, queues, limits, blocks, deployments.

    Against the configured Prefect API: the work pool and its queues with their
    priorities, the global concurrency limits, the blocks, then every deployment
    in prefect.yaml. Safe to run again.

    With --connect-site (asks for what is missing) or the site options: saves the
    GalleryDatabase and SftpTarget blocks and writes the publish settings that
    select them (gallery_block, target, target_block) to galleryflow.toml.
    """
    from galleryflow.app.setup import SetupError, run_setup
    from galleryflow.app.site_setup import SiteSetupError, SiteSpec, config_path
    from galleryflow.app.site_setup import connect_site as connect

    settings = get_settings()
    site: SiteSpec | None = None
    if connect_site or gallery_url or sftp_host:
        site = SiteSpec(
            gallery_url=gallery_url, gallery_password=SecretStr(gallery_password) if gallery_password else None,
            gallery_table=gallery_table, gallery_block=gallery_block, sftp_host=sftp_host,
            sftp_port=sftp_port, sftp_username=sftp_user, sftp_private_key_file=sftp_key_file,
            sftp_password=SecretStr(sftp_password) if sftp_password else None,
            sftp_remote_base=remote_base, sftp_public_base_url=public_url,
            sftp_known_hosts_file=known_hosts_file,
            sftp_known_hosts_policy="accept_new" if accept_new_host_key else "reject",
            target_block=target_block)
        if connect_site:
            site = _ask_site(site)
    try:
        report = run_setup(settings, echo=lambda line: console.print(f"[dim]{line}[/]"),
                           deploy_flows=not no_deploy)
        site_done = connect(site, config_path(config)) if site is not None else []
    except (SetupError, SiteSetupError) as exc:
        console.print(f"[red bold]setup failed[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(f"Prefect API: {report.api_url}")
    for line in report.actions + site_done:
        console.print(f"[green]✓[/] {line}")
    for line in report.unchanged:
        console.print(f"[dim]= {line}[/]")
    for name in report.deployed:
        console.print(f"[green]✓[/] deployment {name}")
    for line in report.skipped:
        console.print(f"[yellow]– skipped[/] {line}")
    pool = _pool_name(settings)
    console.print(f"\nNext: start a worker with  [bold]prefect worker start --pool {pool}[/]")
    if site_done:
        console.print("A worker already running keeps the settings it started with: restart it "
                      "(and `galleryflow serve`) so every run publishes to the site.")


def _ask_site(site):  # type: ignore[no-untyped-def]
    """Ask for what the options left out (a terminal only)."""
    if not console.is_terminal:
        return site
    ask = typer.prompt
    if not site.gallery_url and typer.confirm("Connect the site's gallery database?", default=True):
        site.gallery_url = ask("Gallery DB URL without the password (mysql+pymysql://user@host/db)")
        password = ask("Gallery DB password (empty: none)", default="", hide_input=True,
                       show_default=False)
        site.gallery_password = SecretStr(password) if password else None
        site.gallery_table = ask("Gallery table", default=site.gallery_table)
    if not site.sftp_host and typer.confirm("Upload the photos to a server over SFTP?", default=True):
        site.sftp_host = ask("SFTP host")
        site.sftp_port = ask("SFTP port", default=site.sftp_port, type=int)
        site.sftp_username = ask("SFTP user")
        site.sftp_private_key_file = ask("Private key file on the worker's machine (empty: a password)",
                                         default="", show_default=False) or None
        if not site.sftp_private_key_file:
            site.sftp_password = SecretStr(ask("SFTP password", hide_input=True))
        site.sftp_remote_base = ask("Folder on the server for the photos")
        site.sftp_public_base_url = ask("URL that folder is served at (empty: none)", default="",
                                        show_default=False) or None
        site.sftp_known_hosts_file = ask("known_hosts file (empty: ~/.ssh/known_hosts of the user "
                                         "running the worker)", default="", show_default=False) or None
    return site


def _pool_name(settings) -> str:  # type: ignore[no-untyped-def]
    from galleryflow.app.deployments import load_project

    try:
        return load_project(settings).work_pool.name
    except Exception:
        return "galleryflow"


def serve(
    limit: Annotated[Optional[int], typer.Option(help="Most flow runs at once (default: no limit).")] = None,
    review: Annotated[bool, typer.Option("--review/--no-review",
                                         help="Serve the review page beside the deployments.")] = True,
    review_port: Annotated[Optional[int], typer.Option(
        help="Port of the review page (default review.web_port, 8765).")] = None,
) -> None:
    """Serve every deployment, with its schedules, from this one process.

    The single-machine alternative to setup + worker: no work pool, no worker. The
    review page (`galleryflow review --web`) is served beside them unless --no-review.
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
    if review:
        from galleryflow.app.review_web import ReviewPageError, ReviewServer

        try:
            page = ReviewServer(settings, port=review_port)
            page.start_in_thread()
            console.print(f"[green]✓[/] review page: {page.url()}")
        except ReviewPageError as exc:
            console.print(f"[yellow]– review page not started[/]: {exc}")
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
