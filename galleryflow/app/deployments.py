"""``prefect.yaml`` read as typed specs, shared by ``galleryflow setup`` and ``serve``.

``prefect.yaml`` is the one place that says which deployments exist, with which
schedules, parameters, work pool and queue; ``setup`` hands it to ``prefect
deploy`` and ``serve`` builds the same deployments in-process from these specs.
Its ``{{ $GALLERYFLOW_* }}`` placeholders are filled from galleryflow's settings
(:func:`template_env`).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from galleryflow.core.settings import Settings

PROJECT_ENV = "GALLERYFLOW_PROJECT_DIR"
_PLACEHOLDER = re.compile(r"{{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*}}")


class ProjectNotFound(RuntimeError):
    """No prefect.yaml where galleryflow expects its project folder."""


class ScheduleSpec(BaseModel):
    cron: str | None = None
    interval: float | None = None  # seconds
    timezone: str | None = None
    slug: str | None = None
    active: bool = True

    def describe(self) -> str:
        what = f"cron {self.cron}" if self.cron else f"every {timedelta(seconds=self.interval or 0)}"
        return f"{what} ({self.timezone or 'UTC'})"


class DeploymentSpec(BaseModel):
    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    work_pool: str | None = None
    work_queue: str | None = None

    @property
    def entry_file(self) -> str:
        return self.entrypoint.split(":", 1)[0]

    @property
    def flow_name(self) -> str:
        # galleryflow's flows are named after their function (process_sets → process-sets),
        # which is also how `prefect deploy --name flow/deployment` matches them.
        return self.entrypoint.rsplit(":", 1)[-1].replace("_", "-")

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


class WorkPoolSpec(BaseModel):
    name: str = "galleryflow"
    type: str = "process"
    queues: dict[str, int] = Field(default_factory=lambda: {"urgent": 1, "default": 2})


class ProjectSpec(BaseModel):
    root: Path
    work_pool: WorkPoolSpec
    concurrency_limits: dict[str, int] = Field(default_factory=dict)
    deployments: list[DeploymentSpec]

    def available(self) -> list[DeploymentSpec]:
        """Deployments whose flow module exists in this checkout."""
        return [d for d in self.deployments if (self.root / d.entry_file).is_file()]

    def missing(self) -> list[DeploymentSpec]:
        return [d for d in self.deployments if not (self.root / d.entry_file).is_file()]

    def get(self, full_name: str) -> DeploymentSpec:
        for spec in self.deployments:
            if spec.full_name == full_name:
                return spec
        raise KeyError(f"no deployment {full_name!r} in {self.root / 'prefect.yaml'}")


def project_dir() -> Path:
    """The folder holding prefect.yaml: ``GALLERYFLOW_PROJECT_DIR`` or this checkout."""
    explicit = os.environ.get(PROJECT_ENV)
    root = Path(explicit).expanduser().resolve() if explicit else Path(__file__).resolve().parents[2]
    if not (root / "prefect.yaml").is_file():
        raise ProjectNotFound(
            f"no prefect.yaml in {root}: run galleryflow from a clone of the project "
            f"(pip install -e .) or set {PROJECT_ENV} to the folder that holds prefect.yaml"
        )
    return root


def local_timezone() -> str:
    """This machine's IANA time zone name (``TZ``, /etc/timezone, /etc/localtime), else UTC."""
    from zoneinfo import available_timezones

    zones = available_timezones()
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name in zones:
            return name
    return "UTC"


def template_env(settings: Settings) -> dict[str, str]:
    """Values for prefect.yaml's ``{{ $GALLERYFLOW_* }}`` placeholders."""
    return {
        "GALLERYFLOW_TIMEZONE": settings.ops.timezone or local_timezone(),
        # slots of the global concurrency limits (``galleryflow.concurrency_limits``)
        "GALLERYFLOW_OLLAMA_SLOTS": str(settings.ollama.concurrency_limit),
        "GALLERYFLOW_SCORING_SLOTS": str(settings.scoring.concurrency),
        "GALLERYFLOW_PUBLISH_SLOTS": str(settings.publish.concurrency),
    }


def fill_placeholders(value: Any, env: dict[str, str]) -> Any:
    """Replace ``{{ $NAME }}`` from ``env`` (then os.environ) in strings, lists, dicts."""
    if isinstance(value, str):
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in env:
                return env[name]
            if name in os.environ:
                return os.environ[name]
            raise KeyError(f"prefect.yaml uses {{{{ ${name} }}}} but no value is set for {name}")
        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, list):
        return [fill_placeholders(v, env) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, env) for k, v in value.items()}
    return value


def _schedule(raw: dict[str, Any]) -> ScheduleSpec:
    interval = raw.get("interval")
    if isinstance(interval, timedelta):
        interval = interval.total_seconds()
    return ScheduleSpec(cron=raw.get("cron"), interval=interval, timezone=raw.get("timezone"),
                        slug=raw.get("slug"), active=raw.get("active", True))


def load_project(settings: Settings, root: Path | None = None) -> ProjectSpec:
    """prefect.yaml with its placeholders filled from ``settings``."""
    root = root or project_dir()
    raw = yaml.safe_load((root / "prefect.yaml").read_text()) or {}
    raw = fill_placeholders(raw, template_env(settings))
    ours = raw.get("galleryflow") or {}
    deployments = []
    for item in raw.get("deployments") or []:
        pool = item.get("work_pool") or {}
        deployments.append(DeploymentSpec(
            name=item["name"], entrypoint=item["entrypoint"], description=item.get("description"),
            tags=item.get("tags") or [], parameters=item.get("parameters") or {},
            schedules=[_schedule(s) for s in item.get("schedules") or []],
            work_pool=pool.get("name"), work_queue=pool.get("work_queue_name"),
        ))
    return ProjectSpec(root=root, work_pool=WorkPoolSpec(**(ours.get("work_pool") or {})),
                       concurrency_limits=ours.get("concurrency_limits") or {},
                       deployments=deployments)


def prefect_schedules(spec: DeploymentSpec) -> list[Any]:
    """The spec's schedules as Prefect ``DeploymentScheduleCreate`` objects (for serve)."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    out = []
    for s in spec.schedules:
        if s.cron:
            schedule: Any = CronSchedule(cron=s.cron, timezone=s.timezone or "UTC")
        else:
            schedule = IntervalSchedule(interval=timedelta(seconds=s.interval or 0),
                                        timezone=s.timezone or "UTC")
        out.append(DeploymentScheduleCreate(schedule=schedule, active=s.active, slug=s.slug))
    return out


def served_deployments(project: ProjectSpec) -> list[Any]:
    """``RunnerDeployment`` objects for ``prefect.serve`` (run from ``project.root``).

    Same names, parameters and schedules as ``prefect deploy`` makes from
    prefect.yaml, and the same entrypoints (``flows/runners.py:process_sets``
    rather than the function's own file), so served runs get the configured task
    runner and hooks too.
    """
    from prefect.flows import load_flow_from_entrypoint

    deployments = []
    for spec in project.available():
        flow = load_flow_from_entrypoint(str(project.root / spec.entrypoint))
        deployment = flow.to_deployment(
            name=spec.name, schedules=prefect_schedules(spec), parameters=spec.parameters,
            description=spec.description, tags=spec.tags,
        )
        deployment.entrypoint = spec.entrypoint  # relative to the project folder
        deployments.append(deployment)
    return deployments


def remove_pool_deployments(project: ProjectSpec) -> list[str]:
    """Delete this project's deployments that a work pool serves (made by setup).

    ``serve`` cannot take over a work-pool deployment in place (the server keeps
    its pull steps and loses its code location), so it replaces them; their
    scheduled runs go with them. Returns the names removed.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    removed = []
    with get_client(sync_client=True) as client:
        for spec in project.available():
            try:
                existing = client.read_deployment_by_name(spec.full_name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                client.delete_deployment(existing.id)
                removed.append(spec.full_name)
    return removed
