"""Intake folders: readiness, content identity, claims (exactly one run per set)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from galleryflow.db import ImageSet, SeenContent, session_scope
from galleryflow.intake.queue import (
    claim,
    content_digest,
    discover_sets,
    inspect_folder,
    intake_root,
    is_ready,
    release_claims,
    resolve_intake_dir,
)
from galleryflow.core.settings import Settings
from tests.fixtures.photos import make_set


def _age(folder: Path, seconds: float) -> None:
    """Make a folder and its files look ``seconds`` old (mtime; ctime cannot be set)."""
    past = time.time() - seconds
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (past, past))


class _Records(logging.Handler):
    """Collects one logger's messages (Prefect's logging setup stops them reaching caplog)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.messages)

    def __enter__(self) -> "_Records":
        self.logger.addHandler(self)
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def _settings(gf_home: Settings, quiet: float) -> Settings:
    return gf_home.model_copy(update={"watch": gf_home.watch.model_copy(update={"quiet_seconds": quiet})})


def test_intake_dirs_are_relative_to_the_intake_root(gf_home: Settings, tmp_path: Path):
    assert intake_root(gf_home) == gf_home.home / "intake"
    assert resolve_intake_dir("queue", gf_home) == gf_home.home / "intake" / "queue"
    assert resolve_intake_dir(tmp_path / "elsewhere", gf_home) == tmp_path / "elsewhere"


def test_a_set_is_ready_with_a_marker_or_after_a_quiet_period(gf_home: Settings, tmp_path: Path):
    folder = make_set(tmp_path, "shoot", 2, size=(320, 240))
    (folder / "notes.txt").write_text("client brief")
    state = inspect_folder(folder, gf_home)
    assert state.images == ["shoot-01.jpg", "shoot-02.jpg"]
    assert state.ignored == ["notes.txt"]
    now = time.time()
    assert not is_ready(state, _settings(gf_home, 30), now)  # just written
    assert is_ready(state, _settings(gf_home, 30), now + 31)
    (folder / ".ready").touch()
    assert is_ready(inspect_folder(folder, gf_home), _settings(gf_home, 30), now)


def test_partial_downloads_keep_a_set_waiting_even_when_quiet(gf_home: Settings, tmp_path: Path):
    folder = make_set(tmp_path, "copying", 1, size=(320, 240))
    (folder / "copying-02.jpg.part").write_bytes(b"\xff\xd8half")
    (folder / ".copying-03.jpg.Xy12Ab").write_bytes(b"rsync temp")  # rsync's temporary name
    state = inspect_folder(folder, gf_home)
    assert state.partial == [".copying-03.jpg.Xy12Ab", "copying-02.jpg.part"]
    assert not is_ready(state, _settings(gf_home, 1), time.time() + 3600)


def test_content_identity_ignores_names_and_follows_content(gf_home: Settings, tmp_path: Path):
    first = make_set(tmp_path / "a", "day-one", 2, size=(320, 240))
    renamed = tmp_path / "b" / "same-photos"
    renamed.mkdir(parents=True)
    for i, image in enumerate(sorted(first.iterdir())):
        shutil.copy2(image, renamed / f"IMG_{i}.jpg")
    digest = content_digest(inspect_folder(first, gf_home), gf_home)
    assert content_digest(inspect_folder(renamed, gf_home), gf_home) == digest
    (renamed / "IMG_0.jpg").write_bytes((renamed / "IMG_0.jpg").read_bytes() + b"\0")  # re-export
    assert content_digest(inspect_folder(renamed, gf_home), gf_home) != digest
    assert (gf_home.home / "intake-index.json").is_file()  # hashes are cached by listing


def test_a_claim_is_exclusive_except_for_a_retry_of_the_same_run(db: str):
    first = claim("a" * 64, "/intake/urgent/x", "urgent", "run-1")
    assert first.mine
    assert not claim("a" * 64, "/intake/queue/x-copy", "queue", "run-2").mine
    assert claim("a" * 64, "/intake/urgent/x", "urgent", "run-1").mine  # Retry in the UI
    watch = claim("b" * 64, "/intake/urgent/y", "urgent", None)
    assert watch.mine and not claim("b" * 64, "/intake/urgent/y", "urgent", None).mine


def test_a_failed_run_releases_only_the_sets_it_did_not_complete(db: str):
    claim("c" * 64, "/intake/queue/done", "queue", "run-9")
    claim("d" * 64, "/intake/queue/broken", "queue", "run-9")
    claim("e" * 64, "/intake/queue/other", "queue", "run-8")
    with session_scope() as s:
        s.add(ImageSet(set_key="done", name="done", source_dir="/intake/queue/done",
                       status="completed", flow_run_id="run-9"))
        s.add(ImageSet(set_key="broken", name="broken", source_dir="/intake/queue/broken",
                       status="rolled_back", flow_run_id="run-9"))
    assert release_claims("run-9") == ["/intake/queue/broken"]
    with session_scope() as s:
        assert sorted(s.scalars(select(SeenContent.folder))) == ["/intake/queue/done",
                                                                 "/intake/queue/other"]


def test_discover_takes_ready_unclaimed_sets_once(gf_home: Settings, tmp_path: Path):
    queue = gf_home.home / "intake" / "queue"
    ready = make_set(queue, "ready", 2, size=(320, 240))
    (ready / ".ready").touch()
    quiet = make_set(queue, "quiet", 1, size=(320, 240))
    _age(quiet, 3600)  # old mtimes, but ctime is now: a preserved-mtime copy is not quiet yet
    arriving = make_set(queue, "arriving", 1, size=(320, 240))
    (queue / "empty").mkdir()
    (arriving / "readme.txt").write_text("x")
    settings = _settings(gf_home, 30)
    with _Records("galleryflow.intake.queue") as log:
        assert discover_sets(Path("queue"), settings) == [ready]
        assert "readme.txt" in log.text and "not image files, ignored" in log.text
        assert "quiet: still arriving" in log.text
        # The same content is not taken twice, not even from another folder.
        shutil.copytree(ready, queue / "ready-again")
        assert discover_sets(queue, settings) == []
        assert "ready-again: content already taken" in log.text
    # Once quiet for the period, the others are taken.
    assert discover_sets(queue, _settings(gf_home, 0)) == [arriving, quiet]


def test_a_failed_scheduled_run_gives_its_sets_back(gf_home: Settings, prefect_api, monkeypatch):
    """A run that claimed a set and rolled it back releases it; the next run takes it."""
    import flows.process_sets as process_module
    from flows.process_sets import SetsFailed
    from flows.runners import deployable
    from galleryflow.core.stages import ChunkReport, StageError

    queue = gf_home.home / "intake" / "queue"
    (make_set(queue, "stormy", 2, size=(320, 240)) / ".ready").touch()
    flow = deployable(process_module.process_sets, gf_home, release_claims_on_failure=True)

    def model_down(row_ids, image_set_id, settings):
        raise StageError("vision model unreachable")

    monkeypatch.setattr(process_module, "LATER_STAGES", [("caption", model_down)])
    with pytest.raises(SetsFailed):
        flow(intake_dir="queue")
    with session_scope() as s:
        assert list(s.scalars(select(SeenContent))) == []  # released by the failure hook

    monkeypatch.setattr(process_module, "LATER_STAGES", [("caption", lambda *a: [ChunkReport(stage="caption")])])
    summary = flow(intake_dir="queue")
    assert [(x.name, x.status) for x in summary.sets] == [("stormy", "completed")]
    with session_scope() as s:
        (kept,) = s.scalars(select(SeenContent))
        assert kept.flow_run_id == summary.flow_run_id  # completed: stays claimed
    assert flow(intake_dir="queue").sets == []
