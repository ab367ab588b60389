"""Migrations create the schema the models describe, on SQLite and MariaDB."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from galleryflow.db.engine import current_revision, get_engine, head_revision, is_up_to_date, migrate
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


@pytest.mark.integration
def test_mariadb_migrates_to_head_and_matches_models(mariadb_url):
    migrate(mariadb_url)
    _assert_schema_matches_models(mariadb_url)
    migrate(mariadb_url)
    assert is_up_to_date(mariadb_url)
    cols = {c["name"]: c for c in inspect(get_engine(mariadb_url)).get_columns("review_queue")}
    assert {"sha256", "status", "proof_status", "web_file_name", "brisque_source"} <= set(cols)
