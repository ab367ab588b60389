"""The MCP server through real MCP client sessions: a stdio client that spawns
``python -m galleryflow.app.mcp_server`` (as an assistant would), and the SDK's
in-process client for the error paths."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from galleryflow.batch.status import get_job
from tests.fixtures import photos as gen

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


def _result(call) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert not call.is_error, call.content
    assert call.structured_content is not None
    return call.structured_content


async def _wait(client: Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = _result(await client.call_tool("get_batch_status", {"job_id": job_id}))
        if status["status"] not in ("pending", "running") or time.monotonic() > deadline:
            return status
        await anyio.sleep(0.5)


def test_mcp_tools_over_stdio(tmp_path, gf_home):
    from prefect.settings import get_current_settings

    images = tmp_path / "images"
    for i in range(3):
        gen.jpeg(images / f"product-{i}.jpg", (640, 480), seed=i)
    gen.text_named(images / "readme.jpg")
    gen.video(tmp_path / "clips" / "intro.mp4", black_seconds=0.5)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "galleryflow.app.mcp_server"], cwd=str(tmp_path),
        env={
            "GALLERYFLOW_HOME": str(gf_home.home),
            "GALLERYFLOW_CONFIG": str(tmp_path / "none.toml"),
            "PREFECT_API_URL": str(get_current_settings().api.url),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        },
    )

    ids: dict[str, str] = {}

    async def session() -> None:
        async with Client(params) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"batch_process", "get_batch_status", "apply_preset"} <= names

            # "convert images/*.jpg to 800 px WebP" (they are 640 px: no upscaling)
            started = _result(await client.call_tool("batch_process", {
                "input_pattern": str(images / "*.jpg"), "operation": "resize",
                "output_directory": str(tmp_path / "webp"),
                "parameters": {"width": 800, "format": "webp"}}))
            ids["webp"] = started["job_id"]
            job = await _wait(client, started["job_id"])
            assert (job["status"], job["completed"], job["failed"], job["total"]) == \
                ("partial", 3, 1, 4)
            failed = [f for f in job["files"] if f["status"] == "failed"]
            assert failed[0]["error"] == "readme.jpg: Unsupported format: not an image Pillow can read"

            # "make thumbnails for all MP4 files"
            thumbs = _result(await client.call_tool("apply_preset", {
                "preset": "thumbnail", "input_pattern": str(tmp_path / "clips" / "*.mp4"),
                "output_directory": str(tmp_path / "thumbs"), "wait_seconds": 120}))
            assert thumbs["status"] == "completed" and thumbs["preset_values"]["width"] == 320

            listing = _result(await client.call_tool("get_batch_status", {}))
            assert {j["id"] for j in listing["jobs"]} >= {started["job_id"], thumbs["job_id"]}

            bad = await client.call_tool("apply_preset", {
                "preset": "poster", "input_pattern": "x/*.jpg", "output_directory": "o"})
            assert bad.is_error and "unknown preset 'poster'" in bad.content[0].text

    anyio.run(session)
    for i in range(3):
        img = Image.open(tmp_path / "webp" / f"product-{i}.webp")
        assert (img.format, img.size) == ("WEBP", (640, 480))
    thumb = Image.open(tmp_path / "thumbs" / "intro.jpg")
    assert (thumb.format, thumb.size) == ("JPEG", (320, 240))
    # The same job, seen through the status code the CLI uses.
    job = get_job(ids["webp"])
    assert (job.operation, job.status, len(job.files or [])) == ("resize", "partial", 4)


def test_mcp_in_process_session_errors_and_presets(tmp_path):
    from galleryflow.app.mcp_server import build_server

    async def session() -> None:
        async with Client(build_server()) as client:
            presets = _result(await client.call_tool("list_presets", {}))["presets"]
            assert presets["web_optimized"] == {"operation": "resize", "width": 1280,
                                                "format": "webp", "quality": 85,
                                                "strip_gps": True}
            missing = await client.call_tool("get_batch_status", {"job_id": "nope"})
            assert missing.is_error and "no batch job with id 'nope'" in missing.content[0].text
            bad = await client.call_tool("batch_process", {
                "input_pattern": "x/*.jpg", "output_directory": "o", "operation": "resize"})
            assert bad.is_error and "resize needs width" in bad.content[0].text
            gen.jpeg(tmp_path / "in" / "a.jpg", (640, 480))
            done = _result(await client.call_tool("batch_process", {
                "input_pattern": str(tmp_path / "in" / "*.jpg"), "operation": "watermark",
                "output_directory": str(tmp_path / "marked"),
                "parameters": {"watermark_text": "© Studio"}, "wait_seconds": 120}))
            assert done["status"] == "completed" and done["completed"] == 1
            ids.append(done["job_id"])

    ids: list[str] = []
    anyio.run(session)
    from flows.batch import wait_for_job
    from prefect.logging.handlers import APILogWorker

    assert wait_for_job(ids[0], timeout=60)
    APILogWorker.drain_all()  # the job thread's logs reach this harness, not a later one
    assert Image.open(tmp_path / "marked" / "a.jpg").size == (640, 480)
