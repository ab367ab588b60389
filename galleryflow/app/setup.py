"""``galleryflow setup``: make the configured Prefect server ready to run galleryflow.

Idempotent: each step reads what exists and creates or corrects only what
differs from ``prefect.yaml``, so running it twice (or after an upgrade) is
harmless:

1. the work pool (type ``process``) and its queues with their priorities
   (``urgent`` before ``default``);
2. the global concurrency limits (``ollama``, ``scoring``, ``publish``) that the
   stages' chunks hold a slot of, with the slots from the settings
   (``ollama.concurrency_limit``, ``scoring.concurrency``, ``publish.concurrency``);
3. blocks: every block type in ``blocks/`` is registered (so the UI can create
   them), and the notification webhook is saved when ``ops.notify_url`` is set;
4. every deployment in ``prefect.yaml`` whose flow exists in this checkout,
   through ``prefect deploy`` run from the project folder (a deployment whose
   flow module is missing is skipped with its reason).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from galleryflow.app.deployments import ProjectSpec, load_project
from galleryflow.core.settings import Settings


class SetupError(RuntimeError):
    """A setup step failed; the message says which and why."""


class SetupReport(BaseModel):
    api_url: str
    actions: list[str] = Field(default_factory=list)  # what changed on the server
    unchanged: list[str] = Field(default_factory=list)
    deployed: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)  # deployments not deployed, with why


Echo = Callable[[str], None]


def api_url() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise SetupError(
            "no Prefect API configured: start a server (prefect server start) and run "
            "prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return str(url).rstrip("/")


def ensure_work_pool(project: ProjectSpec, report: SetupReport) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    spec = project.work_pool
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(spec.name)
            if pool.type != spec.type:
                raise SetupError(f"work pool {spec.name!r} exists with type {pool.type!r}; galleryflow "
                                 f"needs {spec.type!r}: delete it or rename the pool in prefect.yaml")
            report.unchanged.append(f"work pool {spec.name} ({spec.type})")
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template() if spec.type == "process" else {}
            try:
                client.create_work_pool(WorkPoolCreate(name=spec.name, type=spec.type,
                                                       base_job_template=template))
                report.actions.append(f"created work pool {spec.name} ({spec.type})")
            except ObjectAlreadyExists:  # a concurrent setup won the race
                report.unchanged.append(f"work pool {spec.name} ({spec.type})")
        # Priorities: create missing queues, then set priorities from the most to the
        # least important (the server keeps them unique by shifting the others).
        existing = {q.name: q for q in client.read_work_queues(work_pool_name=spec.name)}
        for name, priority in sorted(spec.queues.items(), key=lambda kv: kv[1]):
            queue = existing.get(name)
            if queue is None:
                client.create_work_queue(name=name, work_pool_name=spec.name, priority=priority)
                report.actions.append(f"created queue {spec.name}/{name} (priority {priority})")
            elif queue.priority != priority:
                client.update_work_queue(queue.id, priority=priority)
                report.actions.append(f"queue {spec.name}/{name}: priority {queue.priority} → {priority}")
        final = {q.name: q.priority for q in client.read_work_queues(work_pool_name=spec.name)}
    wanted = sorted(spec.queues, key=lambda n: spec.queues[n])
    got = sorted((n for n in final if n in spec.queues), key=lambda n: final[n])
    if got != wanted:
        raise SetupError(f"work queue priorities on the server {final} do not order the queues as "
                         f"prefect.yaml asks ({wanted}): another queue may hold those priorities")
    report.unchanged.append("queue order " + " > ".join(wanted))


def ensure_concurrency_limits(project: ProjectSpec, report: SetupReport) -> None:
    """Create each limit of ``prefect.yaml`` or correct its slots (a stage only creates
    a missing one, with :func:`galleryflow.core.prefect_run.ensure_limit`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name, limit in project.concurrency_limits.items():
            try:
                current = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True))
                report.actions.append(f"created concurrency limit {name}={limit}")
                continue
            if current.limit != limit or not current.active:
                client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
                report.actions.append(f"concurrency limit {name}: {current.limit} → {limit}")
            else:
                report.unchanged.append(f"concurrency limit {name}={limit}")


def block_classes() -> list[type]:
    """Every Block subclass defined in the ``blocks`` package (other helpers add theirs)."""
    from prefect.blocks.core import Block

    import blocks

    found: dict[str, type] = {}
    for module_info in pkgutil.iter_modules(blocks.__path__):
        module = importlib.import_module(f"blocks.{module_info.name}")
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Block) and obj is not Block and obj.__module__ == module.__name__:
                found[obj.__module__ + "." + obj.__qualname__] = obj
    return list(found.values())


def ensure_blocks(settings: Settings, report: SetupReport) -> None:
    from blocks.webhook import NotificationWebhook

    for cls in block_classes():
        cls.register_type_and_schema()  # idempotent: updates the schema if it changed
        report.unchanged.append(f"block type {cls.get_block_type_slug()}")
    if settings.ops.notify_url is not None:
        name = settings.ops.notify_block
        wanted = settings.ops.notify_url.get_secret_value()
        try:
            current = NotificationWebhook.load(name)
            same = current.url.get_secret_value() == wanted  # type: ignore[attr-defined]
        except ValueError:
            current, same = None, False
        if same:
            report.unchanged.append(f"notification block {name}")
        else:
            block = current or NotificationWebhook(url=wanted)  # type: ignore[arg-type]
            block.url = settings.ops.notify_url  # type: ignore[attr-defined]
            block.save(name, overwrite=True)
            report.actions.append(f"{'updated' if current else 'created'} notification block {name}")


def deploy(project: ProjectSpec, settings: Settings, report: SetupReport, echo: Echo,
           timeout: float = 600) -> None:
    """``prefect deploy`` the available deployments, from the project folder."""
    from galleryflow.app.deployments import template_env

    for spec in project.missing():
        report.skipped.append(f"{spec.full_name}: {spec.entry_file} is not in this checkout yet")
    available = project.available()
    if not available:
        return
    args = ["--all"] if not project.missing() else [a for s in available for a in ("--name", s.full_name)]
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect) if prefect.exists() else "prefect", "--no-prompt", "deploy", *args]
    # The same API as ours (it may come from a profile or a test's temporary settings).
    env = {**os.environ, **template_env(settings), "PREFECT_API_URL": report.api_url}
    echo(f"$ cd {project.root} && prefect --no-prompt deploy {' '.join(args)}")
    try:
        result = subprocess.run(command, cwd=project.root, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"prefect deploy did not finish within {timeout:.0f} s") from exc
    output = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0:
        raise SetupError("prefect deploy failed:\n" + output[-4000:])
    missing = [s.full_name for s in available if f"'{s.full_name}' successfully" not in output]
    if missing:
        raise SetupError(f"prefect deploy did not report {', '.join(missing)}:\n" + output[-4000:])
    report.deployed += [s.full_name for s in available]


def run_setup(settings: Settings, echo: Echo = print, deploy_flows: bool = True) -> SetupReport:
    """Every setup step against the configured Prefect API; returns what it did."""
    report = SetupReport(api_url=api_url())
    project = load_project(settings)
    _check_server(report.api_url)
    ensure_work_pool(project, report)
    ensure_concurrency_limits(project, report)
    ensure_blocks(settings, report)
    if deploy_flows:
        deploy(project, settings, report, echo)
    return report


def _check_server(url: str) -> None:
    import httpx

    from galleryflow.core.tls import tls_context

    try:
        response = httpx.get(f"{url}/health", timeout=10, verify=tls_context())
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise SetupError(
            f"the Prefect API at {url} does not answer ({type(exc).__name__}): start it with "
            "`prefect server start` (or point PREFECT_API_URL at your server)"
        ) from None
