"""The offline captioner: deterministic drafts from EXIF, the folder name and image statistics.

Used only when no Ollama server is reachable *and* ``settings.ollama.offline_allowed``
is true (``make demo`` on a fresh machine). It never replaces a model silently:
the stage logs a warning when it starts, every row is marked
``generation_mode="offline"`` and its proof records why (``fallback_used``,
``fallback_reason``, model ``offline-captioner``), and the prefill QC summary
lists the rows drafted this way.

It describes only what it can measure or read: brightness, contrast, colour
temperature and the dominant hue of the model-ready image, how light is
distributed between the upper and lower half, the format; the date, time of day
and camera from EXIF; the place from the set's location or folder name. It
never claims objects (no "lake", no "sunset") that it cannot see. Sentence
structure rotates with the photo's position in the set so a series does not get
one caption; the same guardrails as model drafts apply, and a near-duplicate
tries the next structure.
"""

from __future__ import annotations

import re

from collections.abc import Collection
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel

from galleryflow.captioning.guardrails import Draft, Evidence, keywords_with_evidence, slugify

OFFLINE_MODEL = "offline-captioner"


class ImageStats(BaseModel):
    brightness: float  # 0–255 mean luma
    contrast: float  # luma standard deviation
    warmth: float  # mean(R) − mean(B)
    colourfulness: float  # Hasler & Süsstrunk
    dominant: str  # colour name of the most common saturated hue, or "grey"
    upper_minus_lower: float  # mean luma of the upper half minus the lower half
    detail: float  # mean absolute luma gradient
    orientation: str  # landscape | portrait | square


_HUES = [
    (15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (195, "teal"),
    (255, "blue"), (290, "purple"), (335, "magenta"), (360, "red"),
]


def _hue_name(degrees: float) -> str:
    return next(name for limit, name in _HUES if degrees < limit)


def image_stats(path: Path) -> ImageStats:
    """Statistics of the (model-ready) image, from a 128-px copy."""
    with Image.open(path) as img:
        img.draft("RGB", (256, 256))
        small = img.convert("RGB")
        small.thumbnail((128, 128))
        width, height = img.size
    rgb = np.asarray(small, dtype=np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32)
    saturated = (hsv[..., 1] > 60) & (hsv[..., 2] > 50)
    if saturated.mean() > 0.08:
        hist, _ = np.histogram(hsv[..., 0][saturated] * 360 / 255, bins=36, range=(0, 360))
        dominant = _hue_name(float(np.argmax(hist) * 10 + 5))
    else:
        dominant = "grey"
    half = luma.shape[0] // 2
    detail = float(np.abs(np.diff(luma, axis=1)).mean() + np.abs(np.diff(luma, axis=0)).mean())
    ratio = width / height if height else 1.0
    return ImageStats(
        brightness=float(luma.mean()), contrast=float(luma.std()),
        warmth=float(r.mean() - b.mean()), colourfulness=colourfulness, dominant=dominant,
        upper_minus_lower=float(luma[:half].mean() - luma[half:].mean()) if half else 0.0,
        detail=detail,
        orientation="square" if 0.9 < ratio < 1.1 else ("landscape" if ratio > 1 else "portrait"),
    )


class _Words(BaseModel):
    place: str
    light: str
    contrast: str
    tone: str
    colour: str
    vividness: str
    layout: str
    texture: str
    orientation: str
    when: str  # "in the early morning" or ""
    date: str  # "on 3 July 2026" or ""
    clock: str  # "at 05:40" or ""
    camera: str  # "with a Canon EOS R6" or ""


def _words(evidence: Evidence, stats: ImageStats) -> _Words:
    b = stats.brightness
    taken = evidence.taken_at
    return _Words(
        place=evidence.location or evidence.subject_hint or evidence.set_name or "this set",
        light="dark" if b < 60 else "dim" if b < 105 else "bright" if b > 165 else "evenly lit",
        contrast="strong contrast" if stats.contrast > 60 else
        "soft contrast" if stats.contrast < 30 else "moderate contrast",
        tone="warm" if stats.warmth > 15 else "cool" if stats.warmth < -15 else "neutral",
        colour=stats.dominant,
        vividness="vivid" if stats.colourfulness > 45 else
        "muted" if stats.colourfulness < 15 else "natural",
        layout="a lighter upper half over a darker lower half" if stats.upper_minus_lower > 25 else
        "a darker upper half over a lighter lower half" if stats.upper_minus_lower < -25 else
        "light spread evenly from top to bottom",
        texture="finely textured" if stats.detail > 18 else "smooth" if stats.detail < 6 else "textured",
        orientation=stats.orientation,
        when=f"in the {evidence.time_of_day}" if evidence.time_of_day else "",
        date=f"on {taken.day} {taken:%B %Y}" if taken else "",
        clock=f"at {taken:%H:%M}" if taken else "",
        camera=f"with a {evidence.camera}" if evidence.camera else "",
    )


def _sentence(*parts: str) -> str:
    # A missing fact (no date, no time) leaves its punctuation behind: drop parts
    # that are only punctuation and keep the last of adjacent marks ("x,: y" → "x: y").
    text = " ".join(p for p in parts if p.strip(" ,:;")).replace(" ,", ",").replace(" :", ":")
    text = re.sub(r"[,;:]\s*(?=[,;:])", "", " ".join(text.split()))
    return text[:1].upper() + text[1:].rstrip(" ,:;") + "."


def _captions(w: _Words) -> list[tuple[str, str]]:
    """(caption, alt text) structures; the frame index picks one, a duplicate the next."""
    return [
        (_sentence(f"{w.place},", w.when, w.date + ":", f"a {w.light} {w.orientation} frame in",
                   f"{w.tone} {w.colour} tones with {w.contrast}"),
         _sentence(f"{w.light} {w.colour}-toned {w.orientation} photo from {w.place}", w.clock)),
        (_sentence(f"{w.vividness} {w.colour} hues fill this {w.orientation} view of {w.place}",
                   w.when + ",", f"with {w.layout}"),
         _sentence(f"{w.orientation} view of {w.place} in {w.vividness} {w.colour} hues", w.when)),
        (_sentence(f"{w.texture} detail and {w.contrast} mark this {w.place} photograph taken",
                   w.clock, w.date, w.camera),
         _sentence(f"{w.texture}, {w.tone} photograph of {w.place}", w.date)),
        (_sentence(f"{w.light} light", w.when, f"at {w.place}: {w.layout}, in a {w.tone} palette"),
         _sentence(f"{w.place} {w.when}, {w.light} with {w.layout}")),
        (_sentence(f"{w.tone} {w.colour} palette across a {w.texture} {w.orientation} scene from",
                   f"{w.place},", w.clock, w.camera),
         _sentence(f"{w.tone} {w.colour} scene from {w.place}", w.clock)),
        (_sentence(f"{w.place} {w.date},", w.when + ":", f"{w.vividness} colour, {w.contrast}",
                   f"and {w.layout}"),
         _sentence(f"{w.vividness}, {w.contrast} image of {w.place}", w.when)),
    ]


def caption_variants() -> int:
    return 6


def offline_draft(evidence: Evidence, stats: ImageStats, frame: int = 0, variant: int = 0,
                  max_name_chars: int = 60, taken: Collection[str] = ()) -> Draft:
    """A deterministic draft; ``frame + variant`` picks the sentence structure."""
    w = _words(evidence, stats)
    options = _captions(w)
    caption, alt_text = options[(frame + variant) % len(options)]
    keywords = [w.place.lower(), w.colour, w.light, w.tone]
    if evidence.time_of_day:
        keywords.append(evidence.time_of_day)
    if evidence.taken_at:
        keywords.append(f"{evidence.taken_at:%B}".lower())
    keywords = [k for k in dict.fromkeys(keywords) if k and k != "evenly lit"]
    # Only words this structure actually uses (or the evidence states) become keywords.
    probe = Draft(caption=caption, alt_text=alt_text, keywords=keywords, subject=w.place,
                  file_name="probe")
    keywords, _ = keywords_with_evidence(keywords, probe, evidence)
    base = evidence.set_name or w.place
    if evidence.taken_at:
        stem = slugify(f"{base} {evidence.taken_at:%Y-%m-%d %H%M}", max_name_chars)
    else:
        stem = slugify(f"{base} {frame + 1:03d}", max_name_chars)
    name = stem or f"photo-{frame + 1:03d}"
    suffix = 2
    while name in taken and suffix < 1000:  # burst shots in one minute: tell them apart
        name = f"{stem[: max_name_chars - 4]}-{suffix}"
        suffix += 1
    return Draft(caption=caption, alt_text=alt_text, keywords=keywords,
                 subject=w.place[:80], file_name=name)
