"""galleryflow's MCP server (``galleryflow mcp``; ``python -m galleryflow.app.mcp_server``).

An AI assistant connected over stdio can say "convert images/*.jpg to 800 px
WebP" and follow the job. The tools are thin: they call the same code as the CLI
(``flows.batch.start_batch_job``, ``galleryflow.batch.status``), so a job started
here is an ordinary ``batch-process`` flow run, visible in the Prefect UI and in
``galleryflow batch status``.

Tools:

- ``batch_process``: start a job (returns its id at once; or waits up to
  ``wait_seconds`` and returns the summary);
- ``get_batch_status``: one job with its per-file list, or all running and recent jobs;
- ``apply_preset``: start a job from a preset (its operation and values, plus overrides);
- ``list_presets``: the presets an assistant can offer.

stdout carries the protocol: the SDK points fd 1 at stderr while serving, so a
stray print from a library cannot corrupt it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from galleryflow.batch.status import ACTIVE, JobNotFound, get_job, list_jobs
from galleryflow.batch.presets import BatchRequest, PresetError, all_presets

INSTRUCTIONS = """\
galleryflow runs batch image jobs. Operations: resize (width/height, fit: fit|crop|fill|pad),
convert (format: jpeg|png|webp|avif, quality, lossless), compress (quality or target_size like
"200KB"; never larger than the input unless force), watermark (watermark_text or
watermark_logo, watermark_position, watermark_opacity), thumbnail (images and MP4/MOV/WebM
videos). Presets: call list_presets. Start with batch_process or apply_preset, then follow the
job with get_batch_status(job_id). Paths are on the machine running this server.
"""


def _start(request: BatchRequest) -> str:
    from flows.batch import start_batch_job

    try:
        return start_batch_job(request)
    except PresetError as exc:
        raise ToolError(str(exc)) from None


def _status(job_id: str, include_files: bool = True) -> dict[str, Any]:
    try:
        return get_job(job_id, files=include_files).model_dump(mode="json")
    except JobNotFound as exc:
        raise ToolError(str(exc)) from None


async def _start_and_maybe_wait(request: BatchRequest, wait_seconds: float) -> dict[str, Any]:
    job_id = await anyio.to_thread.run_sync(_start, request)
    deadline = time.monotonic() + max(0.0, min(wait_seconds, 3600.0))
    status = await anyio.to_thread.run_sync(_status, job_id, False)
    while status["status"] in ACTIVE and time.monotonic() < deadline:
        await anyio.sleep(0.5)
        status = await anyio.to_thread.run_sync(_status, job_id, False)
    return {"job_id": job_id, **status}


def build_server() -> MCPServer:
    server = MCPServer("galleryflow", instructions=INSTRUCTIONS)

    @server.tool()
    async def batch_process(
        input_pattern: str,
        output_directory: str,
        operation: str | None = None,
        parameters: dict[str, Any] | None = None,
        preset: str | None = None,
        wait_seconds: float = 0,
    ) -> dict[str, Any]:
        """Start a batch job on files matching input_pattern (a glob; ** recurses).

        operation: resize, convert, compress, watermark or thumbnail (optional with a preset).
        parameters: e.g. {"width": 800, "format": "webp", "quality": 80}; they override the
        preset's. Returns the job id and its status; wait_seconds > 0 waits for it to finish
        (up to that long) before answering.
        """
        request = BatchRequest(input_pattern=input_pattern, operation=operation,
                               output_directory=output_directory, parameters=parameters or {},
                               preset=preset)
        return await _start_and_maybe_wait(request, wait_seconds)

    @server.tool()
    async def get_batch_status(job_id: str | None = None, include_files: bool = True
                               ) -> dict[str, Any]:
        """Status of one job (with every file's outcome and error) when job_id is given;
        otherwise every running job and the most recent finished ones."""
        if job_id:
            return await anyio.to_thread.run_sync(_status, job_id, include_files)
        jobs = await anyio.to_thread.run_sync(list_jobs)
        return {"jobs": [job.model_dump(mode="json") for job in jobs]}

    @server.tool()
    async def apply_preset(
        preset: str,
        input_pattern: str,
        output_directory: str,
        parameters: dict[str, Any] | None = None,
        wait_seconds: float = 0,
    ) -> dict[str, Any]:
        """Apply a named preset (web_optimized, social_media, thumbnail, high_quality, or a
        user preset) to the files matching input_pattern. parameters override the preset's."""
        request = BatchRequest(input_pattern=input_pattern, preset=preset,
                               output_directory=output_directory, parameters=parameters or {})
        result = await _start_and_maybe_wait(request, wait_seconds)
        return {"preset": preset, "preset_values": all_presets().get(preset, {}), **result}

    @server.tool()
    async def list_presets() -> dict[str, Any]:
        """Every preset with its operation and parameters."""
        return {"presets": all_presets()}

    return server


def main() -> None:
    build_server().run("stdio")


if __name__ == "__main__":
    main()
