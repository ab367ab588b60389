"""One life of the pipeline for the fault-injection suite: recover, publish what waits,
run the sets (review answered by approving every passing row), each through the real
CLI commands, in this process with its embedded Prefect server — and, when a kill
point is armed, SIGKILL of the whole process group (this process, its threads, the
embedded server's process) at the N-th time the pipeline passes that point.

    python -m tests.faults.child CONFIG.json

CONFIG: {"sets": [...], "point": "stage:name" | null, "hit": N, "when": "before"|"after",
"target": {SftpTarget fields}, "commands": [[argv], ...] (default: the three above)}.
Exit 0: the life ended without reaching the point.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Where the pipeline can be killed: stages 2-9, by the function that does the work.
# (module, attribute[, class]): the attribute is replaced in the module that calls it.
POINTS: dict[str, tuple[str, str, str | None]] = {
    "2:copy": ("tasks.intake", "copy_verified", None),
    "2:fsync": ("os", "fsync", None),  # a copy written, not yet renamed into place
    "2:open-session": ("galleryflow.core.ledger", "record_created_file", "SessionLedger"),
    # a copy in place, its scoring input and model image being made from its one decode
    "2:make-ahead": ("tasks.intake", "make_ahead", None),
    "3:exif": ("tasks.exif", "read_exif", None),
    "4:rows": ("tasks.review_rows", "upsert_rows", None),
    "5-6:score": ("tasks.score_and_resize", "score_and_resize", None),
    "7:draft": ("tasks.captioning", "write_outcome", None),  # a draft written, not committed
    "7:drafted": ("tasks.captioning", "_caption_one", None),  # a row's draft committed
    "7:proof-artifacts": ("flows.process_sets", "publish_proof_artifacts", None),
    "8:decisions": ("flows.gate", "apply_decisions", None),
    "9:derivatives": ("galleryflow.publishing.units", "make_derivatives", None),
    "9:upload": ("galleryflow.publishing.upload", "upload_file", None),
    "9:rename": ("blocks.sftp_session", "_replace", "SftpSession"),
    "9:upsert": ("blocks.gallery_db", "upsert", "GalleryConnection"),
    "9:mark": ("tasks.publish", "_mark_published", None),
    "9:cleanup": ("tasks.publish", "cleanup_work_files", None),
}


def _die() -> None:
    sys.stdout.flush()
    os.killpg(os.getpgid(0), signal.SIGKILL)


def arm(point: str, hit: int, when: str) -> None:
    module_name, attr, cls_name = POINTS[point]
    module = importlib.import_module(module_name)
    owner: Any = getattr(module, cls_name) if cls_name else module
    original = getattr(owner, attr)
    lock = threading.Lock()
    calls = {"n": 0}

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls["n"] += 1
            now = calls["n"] == hit
        if now and when == "before":
            _die()
        result = original(*args, **kwargs)
        if now:
            _die()
        return result

    setattr(owner, attr, wrapper)


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    from typer.testing import CliRunner  # the CLI exactly as a user runs it, in-process

    from blocks.targets import SftpTarget
    from galleryflow.app.cli import app

    for attempt in range(5):  # lives started together may save it at the same moment
        try:
            SftpTarget(**cfg["target"]).save("fault-site", overwrite=True)
            break
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    if cfg.get("point"):
        arm(cfg["point"], cfg["hit"], cfg["when"])
    runner = CliRunner()
    commands = cfg.get("commands") or [
        ["recover"], ["publish"], ["run", "--here", "--approve-all", *cfg["sets"]]]
    for args in commands:
        result = runner.invoke(app, args, catch_exceptions=True)
        text = result.output if len(result.output) < 4000 else (
            f"{result.output[:1500]}\n…\n{result.output[-2000:]}")
        print(f"$ galleryflow {' '.join(args)} -> {result.exit_code}\n{text}", flush=True)
        if result.exception and not isinstance(result.exception, SystemExit):
            import traceback

            traceback.print_exception(result.exception)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
