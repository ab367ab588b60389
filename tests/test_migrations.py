"""Migrations create the schema the models describe, on SQLite and MariaDB."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from galleryflow.db.engine import (current_revision, get_engine, head_revision, is_up_to_date,
                                   migrate, quick_head_revision)
from galleryflow.db.models import Base

TABLES = {"image_set", "review_queue", "metadata_quality", "publish_log", "batch_job",
          "batch_file", "seen_content", "alembic_version"}


def _assert_schema_matches_models(url: str) -> None:
    engine = get_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    assert current_revision(url) == head_revision()


def test_sqlite_migrates_to_head_and_matches_models(gf_home):
    url = gf_home.db_url
    assert not is_up_to_date(url)
    migrate(url)
    _assert_schema_matches_models(url)
    migrate(url)  # idempotent
    assert is_up_to_date(url)


def test_the_quick_schema_check_agrees_with_alembic(gf_home):
    """is_up_to_date reads the head from the migration files without alembic: the same
    head alembic finds; a DB one revision behind is not up to date."""
    from sqlalchemy import text

    assert quick_head_revision() == head_revision() is not None
    url = gf_home.db_url
    migrate(url)
    assert is_up_to_date(url)
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0005_caption_evidence'"))
    assert not is_up_to_date(url)
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :head"),
                     {"head": head_revision()})
    assert is_up_to_date(url) and current_revision(url) == head_revision()


@pytest.mark.integration
def test_mariadb_migrates_to_head_and_matches_models(mariadb_url):
    migrate(mariadb_url)
    _assert_schema_matches_models(mariadb_url)
    migrate(mariadb_url)
    assert is_up_to_date(mariadb_url)
    cols = {c["name"]: c for c in inspect(get_engine(mariadb_url)).get_columns("review_queue")}
    assert {"sha256", "status", "proof_status", "web_file_name", "brisque_source"} <= set(cols)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("mariadb", marks=pytest.mark.integration)])
def test_0006_keeps_every_row_and_reserves_the_names_in_use(backend, gf_home, request):
    """An install with data at 0004 upgrades without losing a proof or a log entry: the
    review_queue copy SQLite makes to change its unique key must not cascade."""
    from sqlalchemy import text

    url = gf_home.db_url if backend == "sqlite" else request.getfixturevalue("mariadb_url")
    migrate(url, "0004_file_mtime")
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO image_set (id, set_key, name, source_dir, status, "
                          "image_count, excluded_count, started_at) VALUES "
                          "(1, 'alps', 'alps', '/x', 'completed', 2, 0, '2026-01-01')"))
        for row_id, name, web, status in ((1, "a.jpg", "Lake.jpg", "published"),
                                          (2, "b.jpg", "lake.jpg", "approved"),
                                          (3, "c.jpg", None, "new")):
            conn.execute(text(
                "INSERT INTO review_queue (id, set_key, original_name, image_set_id, "
                "created_session_id, sha256, source_path, web_file_name, status, proof_status, "
                "created_at, updated_at) VALUES (:id, 'alps', :name, 1, 1, :sha, '/x', :web, "
                ":status, 'passed', '2026-01-01', '2026-01-01')"),
                dict(id=row_id, name=name, sha=str(row_id) * 64, web=web, status=status))
            conn.execute(text("INSERT INTO metadata_quality (review_id, passed, repair_attempts, "
                              "fallback_used, created_at, updated_at) VALUES "
                              "(:id, 1, 0, 0, '2026-01-01', '2026-01-01')"), dict(id=row_id))
        conn.execute(text("INSERT INTO publish_log (review_id, action, target, status, created_at)"
                          " VALUES (1, 'upsert', 'x', 'done', '2026-01-01')"))
    migrate(url)
    _assert_schema_matches_models(url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM metadata_quality")).scalar() == 3
        assert conn.execute(text("SELECT COUNT(*) FROM publish_log")).scalar() == 1
        assert conn.execute(text("SELECT COUNT(*) FROM review_queue")).scalar() == 3
        reserved = conn.execute(text("SELECT name_key, review_id FROM web_name")).all()
    # one name, two rows (case differs): the published row keeps it
    assert [tuple(r) for r in reserved] == [("lake.jpg", 1)]


def test_prepare_db_migrates_a_new_db_and_leaves_a_current_one_alone(gf_home, monkeypatch):
    """Stage 2's prepare-db migrates when the DB is behind, and does not run alembic
    at all on a DB already at the head (every run paid ~0.3 s for it)."""
    import tasks.intake as intake

    calls = []
    real = intake.migrate
    monkeypatch.setattr(intake, "migrate", lambda url: calls.append(url) or real(url))
    intake.prepare_db.fn()
    assert calls == [gf_home.db_url] and is_up_to_date(gf_home.db_url)
    intake.prepare_db.fn()
    assert calls == [gf_home.db_url]
