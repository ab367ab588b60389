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
and camera from EXIF; the place only from the set's location, a configured place or
GPS (a folder name is never a place: "2026-09 harbour" gives the subject "the
harbour", no dates in words). It never claims objects (no "lake", no "sunset") that it cannot see. Sentence
structure rotates with the photo's position in the set so a series does not get
one caption; the same guardrails as model drafts apply, and a near-duplicate
tries the next structure.
"""

from __future__ import annotations

import re

from collections.abc import Collection
from pathlib import Path

from PIL import Image
from pydantic import BaseModel

from galleryflow.captioning.draft import Draft, Evidence
from galleryflow.captioning.normalise import unique_name
from galleryflow.captioning.text import slugify
from galleryflow.captioning.timeplace import time_words
from galleryflow.imaging.colour import to_rgb
from galleryflow.imaging.decode import decode
from galleryflow.imaging.geometry import reduce
from galleryflow.imaging.stats import ImageStats
from galleryflow.imaging.stats import image_stats as measure

OFFLINE_MODEL = "offline-captioner"
STATS_LONG_EDGE = 128  # the statistics describe the whole frame: a small copy is enough

__all__ = ["OFFLINE_MODEL", "ImageStats", "caption_variants", "image_stats", "offline_draft"]


def image_stats(path: Path) -> ImageStats:
    """Statistics of the (model-ready) image, appearance included
    (:mod:`galleryflow.imaging.stats`: tonal values 0–1), from one small decode.

    The copy is the one the words' thresholds were tuned on: a draft decode of at
    least twice the size a side, then Pillow's thumbnail defaults (bicubic, gap 2)
    to 128 px. A different reduction moves ~1 % of photos across a threshold
    (a "dim" frame becomes "dark"), so it stays this one.
    """
    decoded = decode(path, min_size=(2 * STATS_LONG_EDGE, 2 * STATS_LONG_EDGE))
    small = reduce(to_rgb(decoded.image), STATS_LONG_EDGE, copy=False,
                   resample=Image.Resampling.BICUBIC, reducing_gap=2.0)
    return measure(small, appearance=True)


def _of255(level: float) -> float:
    """A threshold chosen on the 0–255 scale, in ImageStats' 0–1 units."""
    return level / 255.0


# Thresholds of the words (chosen on 8-bit values; ImageStats gives fractions of 255).
_DARK, _DIM, _BRIGHT = _of255(60), _of255(105), _of255(165)
_STRONG_CONTRAST, _SOFT_CONTRAST = _of255(60), _of255(30)
_WARM = _of255(15)
_LIGHTER_ABOVE = _of255(25)
_FINE_DETAIL, _SMOOTH = _of255(18), _of255(6)
_VIVID, _MUTED = 45, 15  # colourfulness keeps its published 0–255 definition


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


def _place(evidence: Evidence) -> str:
    """A named place only from the location or GPS; else the subject the folder states."""
    named = evidence.location or (evidence.place.split(",")[0] if evidence.place else None)
    if named:
        return named
    subject = (evidence.subject_hint or evidence.set_name or "").lower()
    for word in time_words(subject):  # a folder "dawn" says nothing of this photo's hour
        subject = " ".join(re.sub(rf"\b{re.escape(word)}\w*", " ", subject).split())
    return f"the {subject}" if subject else "this set"


def _words(evidence: Evidence, stats: ImageStats) -> _Words:
    b = stats.brightness
    warmth = stats.warmth or 0.0
    upper = stats.upper_minus_lower or 0.0
    detail = stats.detail or 0.0
    taken = evidence.taken_at
    return _Words(
        place=_place(evidence),
        light="dark" if b < _DARK else "dim" if b < _DIM else "bright" if b > _BRIGHT
        else "evenly lit",
        contrast="strong contrast" if stats.contrast > _STRONG_CONTRAST else
        "soft contrast" if stats.contrast < _SOFT_CONTRAST else "moderate contrast",
        tone="warm" if warmth > _WARM else "cool" if warmth < -_WARM else "neutral",
        colour=stats.dominant or "grey",
        vividness="vivid" if stats.colourfulness > _VIVID else
        "muted" if stats.colourfulness < _MUTED else "natural",
        layout="a lighter upper half over a darker lower half" if upper > _LIGHTER_ABOVE else
        "a darker upper half over a lighter lower half" if upper < -_LIGHTER_ABOVE else
        "light spread evenly from top to bottom",
        texture="finely textured" if detail > _FINE_DETAIL else "smooth" if detail < _SMOOTH
        else "textured",
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
    """(caption, alt text) structures; the frame index picks one, a duplicate the next.

    Each is plainly English by its function words ("the", "of", "with", "and"…, at
    least two of them and a fair share of every text, whatever facts fill it in), so
    the language check settles it without loading the language detector
    (:func:`galleryflow.captioning.checks.check_language`; tests/test_offline_captioner.py
    checks every structure).
    """
    return [
        (_sentence(f"{w.place},", w.when, w.date + ":", f"a {w.light} {w.orientation} frame with",
                   f"its {w.tone} {w.colour} tones and {w.contrast}"),
         _sentence(f"{w.light} {w.orientation} photo from {w.place}", w.clock + ",",
                   f"with its {w.colour} tones")),
        (_sentence(f"{w.vividness} {w.colour} hues fill this {w.orientation} view of {w.place}",
                   w.when + ",", f"with {w.layout}"),
         _sentence(f"{w.orientation} view of {w.place} with its {w.vividness} {w.colour} hues",
                   w.when)),
        (_sentence(f"{w.texture} detail and the {w.contrast} mark this photograph of {w.place}, taken",
                   w.clock, w.date, w.camera),
         _sentence(f"{w.texture} and {w.tone}: this photograph of {w.place}", w.date)),
        (_sentence(f"{w.light} light", w.when, f"at {w.place}: {w.layout}, and all of it is in a",
                   f"{w.tone} palette"),
         _sentence(f"{w.place} {w.when}: the {w.light} light, with {w.layout}")),
        (_sentence(f"the {w.tone} {w.colour} palette across a {w.texture} {w.orientation} scene from",
                   f"{w.place},", w.clock, w.camera),
         _sentence(f"the {w.tone} {w.colour} tones of {w.place}", w.clock)),
        (_sentence(f"{w.place} {w.date},", w.when + ":", f"the {w.vividness} colour with {w.contrast},",
                   f"and {w.layout}"),
         _sentence(f"{w.vividness} image of {w.place}, with {w.contrast}", w.when)),
    ]


def caption_variants() -> int:
    return 6


def offline_draft(evidence: Evidence, stats: ImageStats, frame: int = 0, variant: int = 0,
                  max_name_chars: int = 60, taken: Collection[str] = ()) -> Draft:
    """A deterministic draft; ``frame + variant`` picks the sentence structure."""
    w = _words(evidence, stats)
    options = _captions(w)
    caption, alt_text = options[(frame + variant) % len(options)]
    place = w.place.removeprefix("the ").lower()
    keywords = [place, w.colour, w.light, w.tone]
    if evidence.time_of_day:
        keywords.append(evidence.time_of_day)
    if evidence.taken_at:
        keywords.append(f"{evidence.taken_at:%B}".lower())
    # Only words this structure actually uses (or the evidence states) become keywords.
    used = f"{caption} {alt_text}".lower()
    keywords = [k for k in dict.fromkeys(keywords)
                if k and k != "evenly lit" and k != "this set" and (
                    k in used or k == place or k == evidence.time_of_day)]
    base = place if place != "this set" else "photo"
    if evidence.taken_at:
        stem = slugify(f"{base} {evidence.taken_at:%Y-%m-%d %H%M}", max_name_chars)
    else:
        stem = slugify(f"{base} {frame + 1:03d}", max_name_chars)
    # Burst shots in one minute: the shared uniquifier tells them apart.
    name = unique_name(stem or f"photo-{frame + 1:03d}", taken.__contains__,
                       max_chars=max_name_chars)
    return Draft(caption=caption, alt_text=alt_text, keywords=keywords,
                 subject=w.place[:80], file_name=name)
