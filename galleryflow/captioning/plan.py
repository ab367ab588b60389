"""How stage 7 runs this time (:class:`CaptionPlan`: the checked model endpoint, or the
announced offline captioner) and the start-of-stage check that decides it; separate
because it runs once per stage, before any row is touched.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict

from blocks.ollama import (
    ModelInfo,
    OllamaEndpoint,
    OllamaUnavailable,
    check_endpoint,
    resolve_endpoint,
)
from galleryflow.captioning.prompts import PROMPT_VERSION
from galleryflow.core.prefect_run import ensure_limit, run_logger
from galleryflow.core.settings import Settings, get_settings

_log = logging.getLogger(__name__)


class CaptionPlan(BaseModel):
    """How stage 7 runs this time: with a model, or (allowed and announced) offline."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    mode: Literal["model", "offline"]
    endpoint: OllamaEndpoint | None = None
    info: ModelInfo | None = None
    reason: str | None = None
    prompt_version: str = PROMPT_VERSION


def prepare_plan(settings: Settings | None = None, quiet: bool = False) -> CaptionPlan:
    """Check the endpoint; fall back to offline only if it is unreachable *and* allowed.

    Creates the global concurrency limit ``ollama`` when it does not exist
    (``settings.ollama.concurrency_limit`` slots; an existing one is left as it is).
    """
    settings = settings or get_settings()
    logger = run_logger()
    endpoint = resolve_endpoint(settings)
    try:
        info = check_endpoint(endpoint, logger=logger if not quiet else _log)
    except OllamaUnavailable as exc:
        if not settings.ollama.offline_allowed:
            raise
        reason = (f"{exc} Using the offline captioner (settings.ollama.offline_allowed): drafts "
                  "come from EXIF, the folder name and image statistics and are marked "
                  "generation_mode=offline")
        logger.warning(reason)
        return CaptionPlan(mode="offline", reason=reason)
    if endpoint.fallback_model and not info.fallback_model:
        endpoint = endpoint.model_copy(update={"fallback_model": None})
    ensure_limit("ollama", settings.ollama.concurrency_limit)
    return CaptionPlan(mode="model", endpoint=endpoint, info=info)
