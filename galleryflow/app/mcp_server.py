"""galleryflow's MCP server (``galleryflow mcp``; ``python -m galleryflow.app.mcp_server``).

An AI assistant connected over stdio can say "convert images/*.jpg to 800 px
WebP" and follow the job. The tools are thin and typed: their inputs are pydantic
models with enums (operation, preset, format, fit…), a description and examples
per field, and their outputs are pydantic models (structured output with a schema).
They call the same code as the CLI (:func:`galleryflow.app.batch_jobs.start_job`,
:mod:`galleryflow.batch.status`), so a job started here is an ordinary batch job,
seen by ``galleryflow batch status`` too.

Tools:

- ``batch_process``: check and start a job. Every check happens before it answers
  (parameters, the glob and its input folder, the output folder — exists or can be
  created, writable, not the input folder — and the free disk): a job that cannot
  run is a tool error naming the problem, never ``pending``. The job runs in a
  process of its own: it goes on when the client disconnects.
- ``apply_preset``: the same, from a named preset;
- ``get_batch_status``: one job, its progress and every file's outcome;
- ``list_batch_jobs``: running and recent jobs;
- ``list_presets``: the presets an assistant can offer.

stdout carries the protocol: the SDK points fd 1 at stderr while serving, so a
stray print from a library cannot corrupt it.
"""

# No `from __future__ import annotations`: the SDK evaluates the tools' annotations, and
# PresetName is local to build_server (the presets known when the server starts).

import time
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from galleryflow.app.batch_jobs import JobRefused, start_job
from galleryflow.batch.presets import (
    OPERATIONS,
    BatchParams,
    BatchRequest,
    Operation,
    all_presets,
)
from galleryflow.batch.status import ACTIVE, JobNotFound, JobStatus, JobSummary, get_job, list_jobs

INSTRUCTIONS = """\
galleryflow runs batch image jobs on files of the machine running this server. Operations:
resize (width/height, fit: fit|crop|fill|pad), convert (format: jpeg|png|webp|avif, quality,
lossless), compress (quality or target_size in bytes; never larger than the input unless
force), watermark (watermark_text or watermark_logo, watermark_position, watermark_opacity),
thumbnail (images and MP4/MOV/WebM videos). Presets: list_presets. Start with batch_process or
apply_preset: they refuse at once, naming the problem, a job that cannot run. Then follow it
with get_batch_status(job_id) until its status is no longer pending or running; the job keeps
running if you disconnect. Paths are absolute or relative to the server's working folder.
"""

_PATTERN = Field(description="Glob of the input files on the server's machine; ** recurses "
                 "into folders. Absolute, or relative to the server's working folder.",
                 examples=["/home/me/photos/shoot-01/*.jpg", "/srv/products/**/*.png"])
_OUTPUT = Field(description="Folder for the outputs (created if missing; must be writable "
                "and not the input folder). Outputs keep the folders below the glob's "
                "fixed part.", examples=["/home/me/photos/web"])
_PARAMETERS = Field(description="Parameters of the job; only those given override the "
                    "preset's. Unknown names are refused.",
                    examples=[{"width": 800, "format": "webp", "quality": 80}])
_WAIT = Field(ge=0, le=3600, description="Seconds to wait for the job to finish before "
              "answering (0: answer at once with the started job).", examples=[0, 60])


class StartedJob(JobStatus):
    """A job that passed every check and is running (or already finished, after a wait)."""

    job_id: str = Field(description="The job's id: pass it to get_batch_status.")


class JobList(BaseModel):
    jobs: list[JobSummary] = Field(description="Running and pending jobs, then recent ones.")


class PresetList(BaseModel):
    presets: dict[str, dict[str, Any]] = Field(
        description="Each preset's operation and parameter values.")


def _start(request: BatchRequest) -> str:
    try:
        return start_job(request)
    except JobRefused as exc:
        raise ToolError(str(exc)) from None


def _status(job_id: str, include_files: bool = True) -> JobStatus:
    try:
        return get_job(job_id, files=include_files)
    except JobNotFound as exc:
        raise ToolError(str(exc)) from None


async def _start_and_maybe_wait(request: BatchRequest, wait_seconds: float) -> StartedJob:
    job_id = await anyio.to_thread.run_sync(_start, request)
    deadline = time.monotonic() + max(0.0, min(wait_seconds, 3600.0))
    status = await anyio.to_thread.run_sync(_status, job_id, False)
    while status.status in ACTIVE and time.monotonic() < deadline:
        await anyio.sleep(0.25)
        status = await anyio.to_thread.run_sync(_status, job_id, False)
    return StartedJob(job_id=job_id, **status.model_dump())


def _overrides(parameters: BatchParams | None) -> dict[str, Any]:
    """Only the parameters the caller gave (the rest come from the preset or defaults)."""
    return parameters.model_dump(mode="json", exclude_unset=True) if parameters else {}


def build_server() -> MCPServer:
    server = MCPServer("galleryflow", instructions=INSTRUCTIONS)
    names = tuple(sorted(all_presets()))
    PresetName = Literal[names]  # type: ignore[valid-type]  # the presets known at start

    @server.tool()
    async def batch_process(
        input_pattern: Annotated[str, _PATTERN],
        output_directory: Annotated[str, _OUTPUT],
        operation: Annotated[Operation | None, Field(
            description=f"What to do: {', '.join(OPERATIONS)}. Optional with a preset, "
            "which names its own.", examples=["resize"])] = None,
        preset: Annotated[PresetName | None, Field(  # type: ignore[valid-type]
            description="A named parameter set (list_presets shows them).",
            examples=["web_optimized"])] = None,
        parameters: Annotated[BatchParams | None, _PARAMETERS] = None,
        wait_seconds: Annotated[float, _WAIT] = 0,
    ) -> StartedJob:
        """Check and start a batch job on the files matching input_pattern.

        Refuses at once (a tool error naming the problem) a job that cannot run: bad
        parameters, a bad glob or one that matches nothing, a missing input folder, an
        output folder that cannot be created or written or is the input folder, too
        little free disk. Otherwise returns the job (its id, status and totals); follow
        it with get_batch_status. The job keeps running if the client disconnects."""
        request = BatchRequest(input_pattern=input_pattern, operation=operation,
                               output_directory=output_directory,
                               parameters=_overrides(parameters), preset=preset)
        return await _start_and_maybe_wait(request, wait_seconds)

    @server.tool()
    async def apply_preset(
        preset: Annotated[PresetName, Field(  # type: ignore[valid-type]
            description="The preset to apply (list_presets shows their values).",
            examples=["social_media"])],
        input_pattern: Annotated[str, _PATTERN],
        output_directory: Annotated[str, _OUTPUT],
        parameters: Annotated[BatchParams | None, _PARAMETERS] = None,
        wait_seconds: Annotated[float, _WAIT] = 0,
    ) -> StartedJob:
        """Apply a named preset (web_optimized, social_media, thumbnail, high_quality, or a
        user preset) to the files matching input_pattern; parameters override the
        preset's. Checked like batch_process; the answer's `parameters` are what runs."""
        request = BatchRequest(input_pattern=input_pattern, preset=preset,
                               output_directory=output_directory,
                               parameters=_overrides(parameters))
        return await _start_and_maybe_wait(request, wait_seconds)

    @server.tool()
    async def get_batch_status(
        job_id: Annotated[str, Field(description="The id batch_process or apply_preset gave.")],
        include_files: Annotated[bool, Field(description="Include every file's outcome "
                                             "(failures first).")] = True,
    ) -> JobStatus:
        """One job: status, progress (updated as each file finishes), completed / failed /
        not processed counts, what ran, and each file's outcome with its error."""
        return await anyio.to_thread.run_sync(_status, job_id, include_files)

    @server.tool()
    async def list_batch_jobs() -> JobList:
        """Every running or pending job, then the most recent finished ones."""
        jobs = await anyio.to_thread.run_sync(list_jobs)
        return JobList(jobs=[JobSummary(**j.model_dump(include=set(JobSummary.model_fields)))
                             for j in jobs])

    @server.tool()
    async def list_presets() -> PresetList:
        """Every preset with its operation and parameters."""
        return PresetList(presets=all_presets())

    return server


def main() -> None:
    build_server().run("stdio")


if __name__ == "__main__":
    main()
