"""What a reviewer sees of one page of the gate: the photo, its draft, the proof and
the scores, near duplicates side by side.

Shared by the Prefect artifact of each page (``review-page-N``: Markdown with small
inline thumbnails, so the Prefect UI shows the photos without a second server) and
by the review page (:mod:`galleryflow.app.review_web`). Images are made from the
model-ready copy (stage 6), else the incoming copy, decoded in draft mode and
re-encoded with no metadata at all: no EXIF, no GPS, no ICC, no comment.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from galleryflow.core.settings import Settings
from galleryflow.db import Photo, Proof
from galleryflow.imaging.decode import open_reduced
from galleryflow.imaging.encode import encode
from galleryflow.publishing.hold import RULE, HoldingRow, held_message

# Proof-issue keys shown by name; any other key an issue carries (a fix's before and
# after, an override's reason…) is shown generically after them.
_ISSUE_KEYS = ("field", "code", "message", "severity")


def image_source(row: Photo) -> Path | None:
    """The file a preview of ``row`` is made from: the model-ready copy, else the incoming
    copy (never a path from anywhere but the row)."""
    for candidate in (row.ollama_path, row.incoming_path):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def jpeg_preview(source: Path, long_edge: int, quality: int) -> bytes:
    """A metadata-free JPEG of ``source`` with its long edge at most ``long_edge``."""
    return encode(open_reduced(source, long_edge), "jpeg", quality=quality, optimize=True)


def thumbnail_uri(row: Photo, settings: Settings) -> str | None:
    """The row's thumbnail as a ``data:`` URI (None when no image file is left)."""
    source = image_source(row)
    if source is None:
        return None
    try:
        data = jpeg_preview(source, settings.review.thumb_edge, settings.review.thumb_quality)
    except Exception:  # an unreadable work file: the row is still reviewable from its text
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def near_duplicate_groups(rows: Sequence[Photo], max_distance: int) -> dict[int, int]:
    """Row id → group number (1, 2, …) for rows with a near duplicate among ``rows``
    (pHash within ``max_distance`` bits, transitively); rows without one are left out."""
    parent = {r.id: r.id for r in rows}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashed = [(r.id, int(r.phash, 16)) for r in rows if r.phash]
    for i, (a, ha) in enumerate(hashed):
        for b, hb in hashed[i + 1:]:
            if (ha ^ hb).bit_count() <= max_distance:
                parent[root(b)] = root(a)
    members: dict[int, list[int]] = {}
    for r in rows:
        members.setdefault(root(r.id), []).append(r.id)
    groups: dict[int, int] = {}
    for number, ids in enumerate((ids for ids in members.values() if len(ids) > 1), 1):
        groups.update({i: number for i in ids})
    return groups


def keep_duplicates_together(rows: Sequence[Photo], max_distance: int) -> list[Photo]:
    """``rows`` in their order, except that each near duplicate follows the first
    photo of its group (so a reviewer compares them side by side)."""
    groups = near_duplicate_groups(rows, max_distance)
    mates: dict[int, list[Photo]] = {}
    for row in rows:
        if row.id in groups:
            mates.setdefault(groups[row.id], []).append(row)
    ordered: list[Photo] = []
    for row in rows:
        group = groups.get(row.id)
        if group is None:
            ordered.append(row)
        elif mates[group][0] is row:
            ordered += mates[group]
    return ordered


def proof_lines(row: Photo, proof: Proof | None) -> list[str]:
    """The proof in words, whatever states and issue fields it holds: each field whose
    state is not ``accepted``, then each issue (``field: message``, then any further
    facts it records, such as a fix's before and after), then the last refusal note."""
    lines = []
    states = (proof.field_states or {}) if proof else {}
    changed = {k: v for k, v in states.items() if v != "accepted"}
    if changed:
        lines.append("fields: " + ", ".join(f"{k} {v}" for k, v in changed.items()))
    for issue in (proof.issues or []) if proof else []:
        lines.append(issue_text(issue))
    if proof and proof.fallback_used:
        lines.append(f"fallback: {_short(proof.fallback_reason or 'used', 160)}")
    if row.review_note:
        lines.append(f"reviewer: {row.review_note}")
    return lines


def issue_text(issue: dict[str, Any]) -> str:
    head = f"{issue.get('field', '')}: {issue.get('message', '')}".strip(": ")
    severity = issue.get("severity")
    if severity and severity != "error":
        head = f"{head} ({severity})"
    extra = [f"{k}: {_short(v)}" for k, v in issue.items() if k not in _ISSUE_KEYS and v not in
             (None, "", [], {})]
    return head + (f" [{'; '.join(extra)}]" if extra else "")


def _short(value: Any, limit: int = 80) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def score_text(row: Photo) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    return (f"aesthetic {fmt(row.clip_aesthetic_score, '.2f')} · BRISQUE "
            f"{fmt(row.brisque_score, '.1f')} · blur {fmt(row.blur_score, '.0f')}")


class PageRow(BaseModel):
    """One row as the review page and the artifact show it."""

    row_id: int
    set_key: str
    file: str
    status: str
    proof_status: str
    caption: str = ""
    alt_text: str = ""
    keywords: list[str] = Field(default_factory=list)
    subject: str = ""
    web_file_name: str = ""
    scores: str = ""
    proof: list[str] = Field(default_factory=list)
    offline: bool = False
    duplicate_group: int | None = None
    width: int | None = None
    height: int | None = None
    taken: str | None = None
    camera: str | None = None


def page_rows(rows: Sequence[Photo], proofs: dict[int, Proof], settings: Settings) -> list[PageRow]:
    groups = near_duplicate_groups(rows, settings.review.near_duplicate_distance)
    return [PageRow(
        row_id=r.id, set_key=r.set_key, file=r.original_name, status=r.status,
        proof_status=r.proof_status, caption=r.caption or "", alt_text=r.alt_text or "",
        keywords=list(r.keywords or []), subject=r.subject or "", web_file_name=r.web_file_name or "",
        scores=score_text(r), proof=proof_lines(r, proofs.get(r.id)),
        offline=r.generation_mode == "offline", duplicate_group=groups.get(r.id),
        width=r.width, height=r.height,
        taken=r.taken_at.strftime("%Y-%m-%d %H:%M") if r.taken_at else None,
        camera=r.camera_model or r.camera_make,
    ) for r in rows]


def _text(text: str | None) -> str:
    """Text made safe for one line of Markdown: no raw HTML, no line breaks, no
    emphasis or link syntax of its own."""
    text = (text or "").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", text)


def held_lines(held: dict[str, list[HoldingRow]]) -> list[str]:
    """The zero-blocked rule in the gate: which rows hold which set back, and why."""
    if not held:
        return []
    lines = ["", f"**Sets held back** ({RULE}; reject, fix or regenerate these rows):", ""]
    lines += [f"- {_text(held_message(key, rows))}" for key, rows in sorted(held.items())]
    return lines


def page_markdown(rows: Sequence[Photo], proofs: dict[int, Proof], settings: Settings,
                  page: int, pages: int, links: Sequence[str] = (),
                  held: dict[str, list[HoldingRow]] | None = None) -> str:
    """The artifact of one review page: per row a thumbnail, the draft, the proof's
    issues and fixes and the scores; near duplicates next to each other and marked.

    One short section per row rather than a table: a table of 25 drafts is wider than
    the Prefect UI's artifact pane, which then hides its right-hand columns.
    """
    shown = page_rows(rows, proofs, settings)
    lines = [f"## Review {page} of {pages}: {len(rows)} photos", ""]
    lines += [f"{link}  " for link in links]
    for i, (row, info) in enumerate(zip(rows, shown, strict=True), 1):
        uri = thumbnail_uri(row, settings)
        heading = [f"### {i}. {_text(row.set_key)}/{_text(row.original_name)}",
                   f"proof **{row.proof_status}**" + (" (offline draft)" if info.offline else "")]
        if info.duplicate_group:
            heading.append(f"**near duplicate {info.duplicate_group}**")
        lines += ["", " · ".join(heading), ""]
        if uri:
            lines += [f"![{_text(row.original_name)}]({uri})", ""]
        lines += [f"**{_text(info.caption) or '(no caption)'}**  ",
                  f"alt text: {_text(info.alt_text)}  ",
                  f"keywords: {_text(', '.join(info.keywords))}  ",
                  f"subject: {_text(info.subject)} · file: {_text(info.web_file_name)}  ",
                  f"{info.scores}"]
        if info.proof:
            lines += [""] + [f"- {_text(x)}" for x in info.proof]
    lines += held_lines(held or {})
    return "\n".join(lines)
