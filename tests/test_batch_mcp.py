"""The MCP server through the official MCP SDK client: over stdio, spawning
``galleryflow mcp`` as an assistant would, and in-process for the error paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from galleryflow.batch.status import get_job
from tests.fixtures import photos as gen

pytestmark = pytest.mark.usefixtures("db")


@pytest.fixture(autouse=True)
def _local_runner(monkeypatch):
    monkeypatch.setenv("GALLERYFLOW_BATCH__RUNNER", "local")


def _result(call) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert not call.is_error, call.content
    assert call.structured_content is not None
    return call.structured_content


def _error(call) -> str:  # type: ignore[no-untyped-def]
    assert call.is_error, call.structured_content
    return call.content[0].text


def _server(tmp_path: Path, gf_home, **env: str) -> StdioServerParameters:  # type: ignore[no-untyped-def]
    """`galleryflow mcp` as a client configuration would start it."""
    return StdioServerParameters(
        command=sys.executable, args=["-m", "galleryflow.app.cli", "mcp"], cwd=str(tmp_path),
        env={"GALLERYFLOW_HOME": str(gf_home.home),
             "GALLERYFLOW_CONFIG": str(tmp_path / "none.toml"),
             "GALLERYFLOW_BATCH__RUNNER": "local",
             "PATH": os.environ.get("PATH", ""),
             "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env},
    )


@contextmanager
def _unwritable_folder(path: Path) -> Iterator[Path]:
    """A folder this process cannot write in: mode 0555 for a user, a read-only tmpfs for
    root (which writes through any mode)."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_tool_schemas_carry_enums_descriptions_and_output_schemas(tmp_path, gf_home):
    async def session() -> None:
        async with Client(_server(tmp_path, gf_home)) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"batch_process", "apply_preset", "get_batch_status", "list_batch_jobs",
                "list_presets"} <= set(tools)
        schema = tools["batch_process"].input_schema
        props = schema["properties"]
        assert {"input_pattern", "output_directory"} <= set(schema["required"])
        for name, prop in props.items():
            assert prop.get("description"), f"batch_process.{name} has no description"

        def enum(prop: dict[str, Any]) -> list[str]:
            return next(a["enum"] for a in prop.get("anyOf", [prop]) if "enum" in a)

        assert enum(props["operation"]) == ["resize", "convert", "compress", "watermark",
                                            "thumbnail"]
        assert set(enum(props["preset"])) >= {"web_optimized", "social_media", "thumbnail",
                                              "high_quality"}
        assert props["input_pattern"]["examples"]
        params = schema["$defs"]["BatchParams"]
        assert params["additionalProperties"] is False  # unknown parameters are refused
        assert enum(params["properties"]["format"]) == ["jpeg", "png", "webp", "avif"]
        assert enum(params["properties"]["fit"]) == ["fit", "crop", "fill", "pad"]
        assert all(p.get("description") for p in params["properties"].values())
        assert params["properties"]["width"]["examples"]
        assert enum(tools["apply_preset"].input_schema["properties"]["preset"])
        out = tools["get_batch_status"].output_schema
        assert {"status", "progress", "completed", "failed", "not_processed", "files"} <= \
            set(out["properties"])
        files = out["$defs"]["FileStatus"]["properties"]
        assert enum(files["status"]) == ["completed", "skipped", "failed", "not processed"]
        assert tools["batch_process"].output_schema["properties"]["job_id"]["description"]

    anyio.run(session)


def test_a_job_outlives_its_session_and_its_progress_moves_file_by_file(tmp_path, gf_home):
    """Start 40 files, close the session at once, follow the job from a new session."""
    images = tmp_path / "images"
    for i in range(40):
        gen.jpeg(images / f"product-{i:02d}.jpg", (480, 360), seed=i)
    params = _server(tmp_path, gf_home, GALLERYFLOW_BATCH__WORKERS="1")
    out = tmp_path / "webp"

    async def start() -> str:
        async with Client(params) as client:
            started = _result(await client.call_tool("batch_process", {
                "input_pattern": "images/*.jpg",  # relative to the server's folder
                "output_directory": "webp", "operation": "convert",
                "parameters": {"format": "webp", "webp_method": 6, "quality": 90}}))
            assert started["status"] in ("pending", "running") and started["total"] == 40
            assert started["output_directory"] == str(out)
            assert started["parameters"]["webp_method"] == 6
            return started["job_id"]
        # leaving the block closes the session and ends the server process

    job_id = anyio.run(start)
    seen: list[float] = []

    async def follow() -> dict[str, Any]:
        async with Client(params) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                job = _result(await client.call_tool("get_batch_status",
                                                     {"job_id": job_id, "include_files": False}))
                if not seen or job["progress"] != seen[-1]:
                    seen.append(job["progress"])
                if job["status"] not in ("pending", "running"):
                    return _result(await client.call_tool("get_batch_status", {"job_id": job_id}))
                await anyio.sleep(0.05)
            raise AssertionError(f"the job did not finish: {seen}")

    job = anyio.run(follow)
    assert (job["status"], job["completed"], job["failed"], job["not_processed"], job["total"]) \
        == ("completed", 40, 0, 0, 40)
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] == 100.0, seen  # moved ≥ 4 times
    assert {f["status"] for f in job["files"]} == {"completed"}
    assert len(list(out.glob("*.webp"))) == 40
    assert Image.open(out / "product-00.webp").format == "WEBP"


def test_jobs_that_cannot_run_are_tool_errors_naming_the_problem(tmp_path, gf_home):
    images = tmp_path / "images"
    gen.jpeg(images / "a.jpg", (320, 240))
    params = _server(tmp_path, gf_home)

    async def session(locked: Path) -> None:
        async with Client(params) as client:
            async def refused(**arguments: Any) -> str:
                return _error(await client.call_tool("batch_process", {
                    "operation": "thumbnail", **arguments}))

            assert "'[' opens a set of characters that is never closed" in await refused(
                input_pattern="images/[ab.jpg", output_directory="out1")
            assert "No files match 'images/*.png'" in await refused(
                input_pattern="images/*.png", output_directory="out2")
            assert f"input folder {tmp_path / 'nowhere'} does not exist" in await refused(
                input_pattern="nowhere/*.jpg", output_directory="out3")
            assert "is the input folder" in await refused(
                input_pattern="images/*.jpg", output_directory="images")
            text = await refused(input_pattern="images/*.jpg", output_directory=str(locked))
            assert str(locked) in text and ("read-only file system" in text
                                            or "No permission to write" in text), text
            text = await refused(input_pattern="images/*.jpg",
                                 output_directory=str(locked / "sub"))
            assert f"output folder {locked / 'sub'} cannot be created" in text, text
            (tmp_path / "file").write_text("x")
            assert "is not a folder" in await refused(input_pattern="images/*.jpg",
                                                      output_directory="file/out")
            # Typed inputs: the schema's enums and closed parameter set are enforced.
            bad = await client.call_tool("batch_process", {
                "input_pattern": "images/*.jpg", "output_directory": "out4",
                "operation": "shrink"})
            assert bad.is_error and "shrink" in bad.content[0].text
            bad = await client.call_tool("batch_process", {
                "input_pattern": "images/*.jpg", "output_directory": "out4",
                "operation": "resize", "parameters": {"widht": 800}})
            assert bad.is_error and "widht" in bad.content[0].text
            jobs = _result(await client.call_tool("list_batch_jobs", {}))
            assert jobs == {"jobs": []}  # nothing was started

    with _unwritable_folder(tmp_path / "locked") as locked:
        anyio.run(session, locked)
    for name in ("out1", "out2", "out3", "out4"):
        assert not (tmp_path / name).exists()  # a refused job creates no folder


def test_mcp_in_process_session_presets_and_a_finished_job(tmp_path):
    from galleryflow.app.batch_jobs import wait_for_job
    from galleryflow.app.mcp_server import build_server

    ids: list[str] = []

    async def session() -> None:
        async with Client(build_server()) as client:
            presets = _result(await client.call_tool("list_presets", {}))["presets"]
            assert presets["web_optimized"] == {"operation": "resize", "width": 1280,
                                                "format": "webp", "quality": 85,
                                                "strip_gps": True}
            missing = await client.call_tool("get_batch_status", {"job_id": "nope"})
            assert "no batch job with id 'nope'" in _error(missing)
            gen.jpeg(tmp_path / "in" / "a.jpg", (640, 480))
            gen.text_named(tmp_path / "in" / "readme.jpg")
            bad = await client.call_tool("batch_process", {
                "input_pattern": str(tmp_path / "in" / "*.jpg"), "output_directory": "o",
                "operation": "resize"})
            assert "resize needs width" in _error(bad)
            done = _result(await client.call_tool("apply_preset", {
                "preset": "thumbnail", "input_pattern": str(tmp_path / "in" / "*.jpg"),
                "output_directory": str(tmp_path / "thumbs"),
                "parameters": {"watermark_text": "© Studio"}, "wait_seconds": 120}))
            assert (done["status"], done["completed"], done["failed"]) == ("partial", 1, 1)
            assert (done["parameters"]["width"], done["requested"]) == \
                (320, {"watermark_text": "© Studio"})
            ids.append(done["job_id"])
            job = _result(await client.call_tool("get_batch_status", {"job_id": done["job_id"]}))
            failed = [f for f in job["files"] if f["status"] == "failed"]
            assert failed[0]["error"] == "readme.jpg: Unsupported format: not an image Pillow can read"
            listing = _result(await client.call_tool("list_batch_jobs", {}))
            assert [j["id"] for j in listing["jobs"]] == [done["job_id"]]

    anyio.run(session)
    assert wait_for_job(ids[0], timeout=60)
    assert Image.open(tmp_path / "thumbs" / "a.jpg").size == (320, 240)
    assert get_job(ids[0]).operation == "thumbnail"  # what the CLI's status reads
