"""galleryflow's domain state (SQLAlchemy 2). Prefect holds orchestration state.

Schema changes go through an Alembic migration in ``galleryflow/migrations``
(never ``create_all``); ``tests/test_migrations.py`` checks that the models and
the migrated schema agree, on SQLite and on MariaDB.

String columns carry lengths because MySQL needs them for VARCHAR and indexes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Index,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from galleryflow.core.status import ProofStatus, RowStatus, SetStatus, check_transition


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ImageSet(Base):
    """One intake set in one session (a flow run). ``set_key`` ties sessions together."""

    __tablename__ = "image_set"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    set_key: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    source_dir: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(32), default=SetStatus.RUNNING)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # host:pid:start-time of the process running the session (core.liveness): a
    # session whose process is gone is recovered by the next run; 0006_names_recovery
    owner: Mapped[str | None] = mapped_column(String(255))
    location: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))
    content_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    excluded_count: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # {"validate": 1.2, "intake": 3.4, ...}: wall seconds per stage, for the daily report
    stage_seconds: Mapped[dict[str, float] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    rows: Mapped[list["Photo"]] = relationship(
        back_populates="image_set", foreign_keys="Photo.image_set_id"
    )


class Photo(Base):
    """One image: identity, paths, EXIF, scores, drafts, review and publish state."""

    __tablename__ = "review_queue"
    __table_args__ = (
        # A photo is its content within its set (0006_names_recovery): a file re-exported
        # under a known name with other bytes is another row.
        UniqueConstraint("set_key", "sha256", name="uq_review_set_sha"),
        Index("ix_review_set_file", "set_key", "original_name"),
        Index("ix_review_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # identity
    set_key: Mapped[str] = mapped_column(String(255))
    original_name: Mapped[str] = mapped_column(String(255))
    image_set_id: Mapped[int] = mapped_column(ForeignKey("image_set.id"), index=True)
    created_session_id: Mapped[int] = mapped_column(ForeignKey("image_set.id"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    phash: Mapped[str | None] = mapped_column(String(32))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    # The incoming copy's mtime as intake left it: with file_size, the cheap check
    # that it still is the content ``sha256`` names (core.fsutil.FileStamp).
    file_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    image_format: Mapped[str | None] = mapped_column(String(16))
    # paths
    source_path: Mapped[str] = mapped_column(String(1024))
    incoming_path: Mapped[str | None] = mapped_column(String(1024))
    ollama_path: Mapped[str | None] = mapped_column(String(1024))
    thumbnail_path: Mapped[str | None] = mapped_column(String(1024))
    # EXIF
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    camera_make: Mapped[str | None] = mapped_column(String(128))
    camera_model: Mapped[str | None] = mapped_column(String(128))
    lens: Mapped[str | None] = mapped_column(String(255))
    exposure_time: Mapped[str | None] = mapped_column(String(32))
    f_number: Mapped[float | None] = mapped_column(Float)
    iso: Mapped[int | None] = mapped_column(Integer)
    focal_length: Mapped[float | None] = mapped_column(Float)
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    gps_alt: Mapped[float | None] = mapped_column(Float)
    # The original's own text fields (EXIF ImageDescription/UserComment, IPTC keywords,
    # caption and city, XMP subject/description): keyword evidence; 0005_caption_evidence
    embedded_text: Mapped[dict[str, str] | None] = mapped_column(JSON)
    orientation: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # scores, each with its source ("model:weights" or "fallback: reason")
    brisque_score: Mapped[float | None] = mapped_column(Float)
    brisque_source: Mapped[str | None] = mapped_column(String(255))
    clip_aesthetic_score: Mapped[float | None] = mapped_column(Float)
    clip_aesthetic_source: Mapped[str | None] = mapped_column(String(255))
    blur_score: Mapped[float | None] = mapped_column(Float)
    brightness_score: Mapped[float | None] = mapped_column(Float)
    contrast_score: Mapped[float | None] = mapped_column(Float)
    stats_source: Mapped[str | None] = mapped_column(String(255))
    # Classifier-assisted keyword hints: {"source": model, "labels": [[label, score], …]}
    # from stage 5's CLIP embedding; none without weights. 0005_caption_evidence
    visual_hints: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # drafts (stage 7) and human edits
    caption: Mapped[str | None] = mapped_column(Text)
    alt_text: Mapped[str | None] = mapped_column(Text)
    keywords: Mapped[list[str] | None] = mapped_column(JSON)
    subject: Mapped[str | None] = mapped_column(String(255))
    location: Mapped[str | None] = mapped_column(String(255))
    web_file_name: Mapped[str | None] = mapped_column(String(255), index=True)
    generation_mode: Mapped[str | None] = mapped_column(String(32))
    edited_fields: Mapped[list[str] | None] = mapped_column(JSON)
    # review
    status: Mapped[str] = mapped_column(String(32), default=RowStatus.NEW)
    proof_status: Mapped[str] = mapped_column(String(16), default=ProofStatus.PENDING)
    reviewer: Mapped[str | None] = mapped_column(String(255))
    review_note: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)
    error_category: Mapped[str | None] = mapped_column(String(64))
    # publish (mirror of the remote side)
    remote_id: Mapped[str | None] = mapped_column(String(64))
    public_url: Mapped[str | None] = mapped_column(String(1024))
    thumbnail_url: Mapped[str | None] = mapped_column(String(1024))
    published_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    image_set: Mapped[ImageSet] = relationship(back_populates="rows", foreign_keys=[image_set_id])
    proof: Mapped["Proof | None"] = relationship(
        back_populates="row", uselist=False, cascade="all, delete-orphan"
    )

    @validates("status")
    def _check_status(self, _key: str, value: str) -> str:
        # The ORM path is the only way code changes a status: enforce the machine here.
        current = self.__dict__.get("status")
        if current is None:
            return str(RowStatus(value))
        return str(check_transition(current, value, what=f"{self.set_key}/{self.original_name}"))

    @property
    def is_human_edited(self) -> bool:
        return bool(self.edited_fields)


class Proof(Base):
    """The proof for one row's metadata: what was accepted, blocked, repaired, and why."""

    __tablename__ = "metadata_quality"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(
        ForeignKey("review_queue.id", ondelete="CASCADE"), unique=True
    )
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    # {"caption": "accepted" | "blocked" | "repaired" | "edited", ...}
    field_states: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # [{"field": ..., "code": ..., "message": ...}, ...]
    issues: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    repair_attempts: Mapped[int] = mapped_column(Integer, default=0)
    fallback_used: Mapped[bool] = mapped_column(Boolean, default=False)
    fallback_reason: Mapped[str | None] = mapped_column(Text)
    generation_mode: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(255))
    prompt_version: Mapped[str | None] = mapped_column(String(32))
    # [{"attempt": 1, "model": ..., "outcome": "answer" | "request_error", "codes": [...]}]
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # [{"field": ..., "code": ..., "reason": ..., "reviewer": ..., "at": ...}]
    overrides: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    row: Mapped[Photo] = relationship(back_populates="proof")


class PublishLog(Base):
    """Each remote write (upload, upsert), so a resumed publish skips what is done."""

    __tablename__ = "publish_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("review_queue.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))  # upload_image | upload_thumb | upsert
    target: Mapped[str] = mapped_column(String(255))
    remote_path: Mapped[str | None] = mapped_column(String(1024))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # started | done | failed
    detail: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BatchJob(Base):
    """A batch image job; its id is the Prefect flow run id."""

    __tablename__ = "batch_job"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation: Mapped[str] = mapped_column(String(32))
    preset: Mapped[str | None] = mapped_column(String(64))
    input_pattern: Mapped[str] = mapped_column(String(1024))
    output_directory: Mapped[str] = mapped_column(String(1024))
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="running")
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # why the job stopped as a whole (bad parameters, disk full); 0002_batch
    error: Mapped[str | None] = mapped_column(Text)
    # host:pid:start-time of the process running it, and its last sign of life
    # (start, then each finished chunk): a killed job is seen as such; 0003_batch_owner
    owner: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)


class BatchFile(Base):
    """One input file of a batch job and what became of it."""

    __tablename__ = "batch_file"
    __table_args__ = (Index("ix_batch_file_job", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("batch_job.id", ondelete="CASCADE"))
    input_path: Mapped[str] = mapped_column(String(1024))
    output_path: Mapped[str | None] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16))  # done | skipped | failed
    error: Mapped[str | None] = mapped_column(Text)
    # what to know about a file that succeeded (kept original, first frame used); 0002_batch
    note: Mapped[str | None] = mapped_column(Text)
    input_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebName(Base):
    """A web file name reserved for one photo (0006_names_recovery).

    ``name_key`` is the published file name case-folded the way the gallery's
    collation folds it (web names are ASCII, so ``lower()`` is exactly what every
    MySQL/MariaDB ``_ci`` collation and SQLite's NOCASE compare), and it is unique:
    the database, not a read-then-write check, decides who gets a name, across sets,
    runs, workers and concurrent chunks.
    """

    __tablename__ = "web_name"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name_key: Mapped[str] = mapped_column(String(255), unique=True)
    file_name: Mapped[str] = mapped_column(String(255))
    review_id: Mapped[int] = mapped_column(
        ForeignKey("review_queue.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SeenContent(Base):
    """Content the watch service has already started a run for (survives restarts)."""

    __tablename__ = "seen_content"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    folder: Mapped[str] = mapped_column(String(1024))
    queue: Mapped[str] = mapped_column(String(32))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
