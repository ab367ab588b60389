"""galleryflow's own database: models, engine/session helpers, migrations."""

from galleryflow.db.engine import get_engine, migrate, session_scope
from galleryflow.db.models import (
    BatchFile,
    BatchJob,
    ImageSet,
    Proof,
    PublishLog,
    Photo,
    SeenContent,
    WebName,
)

__all__ = [
    "BatchFile",
    "BatchJob",
    "ImageSet",
    "Proof",
    "PublishLog",
    "Photo",
    "SeenContent",
    "WebName",
    "get_engine",
    "migrate",
    "session_scope",
]
