"""Published file names and titles, from the reviewed row."""

from __future__ import annotations

import re
from pathlib import Path

from blocks.targets import remote_path

_SUFFIX = re.compile(r"\.(jpe?g)$", re.IGNORECASE)


def slug(text: str) -> str:
    """Lower-case words joined by ``-`` (at most 120 characters; ``photo`` when empty)."""
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return text[:120] or "photo"


def publish_file_name(web_file_name: str | None, original_name: str) -> str:
    """The published file name: the reviewed web name (checked, never rewritten) + .jpg.

    Only a row without a web name falls back to a slug of its original name.
    Raises :class:`UnsafeRemotePath` for a name that could leave the remote base.
    """
    if web_file_name is None or not web_file_name.strip():
        base = slug(Path(original_name).stem)
    else:
        base = _SUFFIX.sub("", web_file_name.strip())
    return remote_path(f"{base}.jpg").name


def headline(subject: str | None, caption: str | None) -> str | None:
    """A short title: the row's subject, else the caption's first sentence."""
    if subject:
        return subject.strip()[:120]
    if not caption:
        return None
    first = re.split(r"(?<=[.!?])\s", caption.strip(), maxsplit=1)[0]
    if len(first) > 120:
        first = first[:120].rsplit(" ", 1)[0] + "…"
    return first
