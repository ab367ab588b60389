"""Shared setup for the publish tests: real rows with real incoming JPEGs.

Rows are inserted through the ORM and moved through the status machine by legal
transitions only (new → scored → captioned → awaiting_review → approved/rejected),
exactly as the earlier stages and the review gate would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from galleryflow.db import ImageSet, PublishLog, ReviewRow, session_scope
from galleryflow.core.fsutil import copy_verified
from galleryflow.core.settings import Settings
from tests.conftest import make_set

PATHS = {
    "awaiting_review": ["scored", "captioned", "awaiting_review"],
    "approved": ["scored", "captioned", "awaiting_review", "approved"],
    "rejected": ["scored", "captioned", "awaiting_review", "rejected"],
    "captioned": ["scored", "captioned"],
}
REPO = Path(__file__).resolve().parent.parent


@dataclass
class RowSpec:
    status: str = "approved"
    proof: str = "passed"
    web_file_name: str | None = None


def add_rows(
    settings: Settings,
    tmp_path: Path,
    specs: list[RowSpec],
    set_name: str = "lake-shore",
    size: tuple[int, int] = (960, 640),
) -> list[int]:
    """A set of real JPEGs copied to incoming/, one review row each, in the given states."""
    folder = make_set(tmp_path / "sets", set_name, len(specs), size=size)
    sources = sorted(folder.glob("*.jpg"))
    ids = []
    with session_scope(settings.db_url) as session:
        image_set = ImageSet(set_key=set_name, name=set_name, source_dir=str(folder))
        session.add(image_set)
        session.flush()
        for index, (spec, source) in enumerate(zip(specs, sources, strict=True)):
            incoming = settings.incoming_dir / set_name / source.name
            sha = copy_verified(source, incoming)
            has_gps = index % 2 == 0  # make_set puts GPS on every other image
            row = ReviewRow(
                set_key=set_name,
                original_name=source.name,
                image_set_id=image_set.id,
                created_session_id=image_set.id,
                sha256=sha,
                source_path=str(source),
                incoming_path=str(incoming),
                file_size=source.stat().st_size,
                image_format="JPEG",
                taken_at=datetime(2026, 6, 14, 9, 0) + timedelta(minutes=30 * index),
                camera_make="Canon",
                camera_model="Canon EOS R6",
                width=size[0],
                height=size[1],
                gps_lat=46.5 + index * 0.01 if has_gps else None,
                gps_lon=7.9 if has_gps else None,
                gps_alt=1500.0 if has_gps else None,
                caption=f"Morning light on the lake shore, frame {index + 1}. Mist over the water.",
                alt_text=f"A calm lake below green hills in soft morning light (frame {index + 1})",
                keywords=["lake", "morning", "hills", f"frame-{index + 1}"],
                subject="Lake shore at dawn",
                location="Lake Thun",
                web_file_name=spec.web_file_name or f"lake-shore-dawn-{index + 1:02d}",
                proof_status=spec.proof,
            )
            session.add(row)
            session.flush()
            for status in PATHS[spec.status]:
                row.status = status  # through the status machine, one legal step at a time
            ids.append(row.id)
    return ids


def rows_by_id(settings: Settings, ids: list[int]) -> dict[int, ReviewRow]:
    with session_scope(settings.db_url) as session:
        return {r.id: r for r in session.scalars(select(ReviewRow).where(ReviewRow.id.in_(ids)))}


def log_entries(settings: Settings) -> list[PublishLog]:
    with session_scope(settings.db_url) as session:
        return list(session.scalars(select(PublishLog).order_by(PublishLog.id)))


def sftp_target_fields(server: Any, base: str, **extra: Any) -> dict[str, Any]:
    fields = dict(
        host=server.host,
        port=server.port,
        username=server.username,
        private_key_file=str(server.key_file),
        known_hosts=server.known_hosts,
        remote_base=base,
        public_base_url="https://photos.example.org/gallery",
        connect_timeout=10,
    )
    fields.update(extra)
    return fields


CHILD = r"""
import json, os, signal, sys
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
from blocks import targets
from blocks.gallery_db import GalleryConnection, GalleryDatabase
from tasks import publish

def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

crash = cfg["crash"]
if crash == "mid_file":
    # Small blocks; after the first block is on the server (fstat round trip), die.
    import paramiko
    targets.SftpSession.BLOCK = 16 * 1024
    original = paramiko.SFTPFile.write
    calls = {"n": 0}
    def write(self, data):
        calls["n"] += 1
        if calls["n"] == 2:
            self.stat()
            die()
        return original(self, data)
    paramiko.SFTPFile.write = write
elif crash == "before_rename_local":
    os.fsync = lambda fd: die()
elif crash == "after_rename":
    original_replace = targets.SftpSession._replace
    def replace(self, tmp, final):
        original_replace(self, tmp, final)
        die()
    targets.SftpSession._replace = replace
elif crash == "before_upsert":
    GalleryConnection.upsert = die
elif crash == "before_mark":
    publish._mark_published = die

from galleryflow.core.settings import PublishSettings, get_settings

settings = get_settings()  # same GALLERYFLOW_HOME as the test (inherited environment)
settings = settings.model_copy(update={"publish": PublishSettings(**cfg["publish"])})
kind = cfg["kind"]
target = (targets.SftpTarget if kind == "sftp" else targets.LocalFolderTarget)(**cfg["target"])
publish.publish_rows(cfg["row_ids"], settings=settings, target=target,
                     gallery=GalleryDatabase(**cfg["gallery"]))
sys.exit(3)  # the crash point was never reached
"""


def run_child_until_killed(
    tmp_path: Path,
    settings: Settings,
    crash: str,
    kind: str,
    target: dict[str, Any],
    gallery: dict[str, Any],
    row_ids: list[int],
) -> int:
    """Run publish_rows in a separate process that SIGKILLs itself at ``crash``.

    The child gets the test's home (environment) and publish settings, so it
    builds byte-identical derivatives to the ones a rerun in the test builds.
    """
    cfg = tmp_path / f"child-{crash}.json"
    cfg.write_text(
        json.dumps(
            dict(
                crash=crash,
                kind=kind,
                target=target,
                gallery=gallery,
                row_ids=row_ids,
                publish=settings.publish.model_dump(mode="json"),
            )
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == -9, (
        f"child was expected to die by SIGKILL at {crash}, exit {proc.returncode}:\n"
        f"{proc.stderr[-3000:]}"
    )
    return proc.returncode
