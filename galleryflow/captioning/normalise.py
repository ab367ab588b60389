"""Deterministic normalisers: what is trivially wrong is fixed here, before any judgement,
and never costs a model call. Every change is an :class:`Issue` of severity ``fixed``
with ``before`` and ``after``, shown to the reviewer in the proof.

The web file name is made unique by :func:`unique_name`, a pure function of the
name, a ``taken(name) -> bool`` predicate and the capture time; the caller decides
what "taken" means (the set, the site, a reservation table).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime

from galleryflow.captioning.draft import Draft, Issue
from galleryflow.captioning.text import collapse, is_plural_of, slugify

# A leading phrase that only says "this is a photo": cut, and the rest capitalised.
# "Photo of a boat" → "A boat"; "This image shows two boats" → "Two boats".
_LEADING_FILLER = re.compile(
    r"^(?:"
    r"(?:this|the|here)\s+is\s+(?:a|an|the)\s+(?:close-?up\s+)?(?:photo(?:graph)?|image|picture|"
    r"shot|snapshot)\s+(?:of|showing)\s+"
    r"|(?:(?:a|an|the)\s+)?(?:close-?up\s+)?(?:photo(?:graph)?|picture|snapshot|shot)\s+"
    r"(?:of|showing)\s+"
    r"|(?:this|the)\s+(?:photo(?:graph)?|image|picture|shot|snapshot|scene)\s+"
    r"(?:shows|depicts|captures|features|presents|portrays|showcases|displays)\s+"
    r"|image\s+of\s+"
    r"|in\s+(?:this|the)\s+(?:photo(?:graph)?|image|picture|shot),?\s+"
    r"|(?:pictured|shown)\s+here\s+(?:is|are)\s+"
    r")",
    re.IGNORECASE,
)
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".avif", ".tif", ".tiff", ".heic", ".gif")
_EDGE_PUNCT = " \t,;:-–—_/|*~.!?\"'“”‘’()[]{}"


def _fix(code: str, field: str, message: str, before: object, after: object) -> Issue:
    return Issue(code=code, field=field, message=message, severity="fixed",
                 before=before, after=after)


def normalise_text(name: str, text: str) -> tuple[str, list[Issue]]:
    """Whitespace, a leading filler phrase, the first letter's case, stray punctuation."""
    fixes: list[Issue] = []
    value = unicodedata.normalize("NFC", text or "")
    spaced = collapse(value)
    if spaced != value:
        fixes.append(_fix("whitespace", name, f"{name}: extra spaces or line breaks removed",
                          value, spaced))
    value = spaced
    if name in ("caption", "alt_text"):
        match = _LEADING_FILLER.match(value)
        rest = value[match.end():] if match else ""
        if match and len(rest.split()) >= 2:
            cut = rest[:1].upper() + rest[1:]
            fixes.append(_fix("filler_removed", name, f"{name}: the opening "
                              f"“{match.group(0).strip()}” removed", value, cut))
            value = cut
    trimmed = re.sub(r"([!?.,;:])\1+", r"\1", value).lstrip(" ,;:-–—.")
    if name == "subject":
        trimmed = trimmed.rstrip(" .,;:")
    else:
        trimmed = trimmed.rstrip(" ,;:-–—")
    if trimmed != value:
        fixes.append(_fix("punctuation", name, f"{name}: stray punctuation trimmed",
                          value, trimmed))
        value = trimmed
    if name in ("caption", "alt_text") and value[:1].islower():
        capital = value[:1].upper() + value[1:]
        fixes.append(_fix("casing", name, f"{name}: first letter capitalised", value, capital))
        value = capital
    if name == "caption" and value and value[-1].isalnum():
        fixes.append(_fix("punctuation", name, "caption: closing full stop added",
                          value, value + "."))
        value += "."
    return value, fixes


def normalise_keywords(keywords: Sequence[str]) -> tuple[list[str], list[Issue]]:
    """Lower-case, single spaces, no edge punctuation, de-duplicated, plural twins merged.

    A plural and its singular in one list (``ridges``, ``ridge``) become the singular,
    by the lemmatizer's dictionary; a lone plural (``alps``, ``texas``) stays.
    """
    fixes: list[Issue] = []
    cleaned: list[str] = []
    for original in keywords:
        trimmed = collapse(original).strip(_EDGE_PUNCT)
        value = trimmed.lower()
        if value != original:
            code = "keyword_case" if trimmed == original.strip() else "keyword_cleaned"
            fixes.append(_fix(code, "keywords", f"keyword “{original}” written as “{value}”",
                              original, value))
        if value:
            cleaned.append(value)
        else:
            fixes.append(_fix("empty_keyword", "keywords", f"empty keyword “{original}” dropped",
                              original, None))
    out: list[str] = []
    for value in cleaned:
        if value in out:
            fixes.append(_fix("duplicate_keyword", "keywords",
                              f"keyword “{value}” repeated: dropped", value, None))
            continue
        twin = _twin(value, out)
        if twin is None:
            out.append(value)
            continue
        index, singular = twin
        if singular == value:  # the singular arrives after its plural: it takes the place
            fixes.append(_fix("plural_twin", "keywords", f"keywords “{out[index]}” and "
                              f"“{value}” merged into “{value}”", out[index], value))
            out[index] = value
        else:
            fixes.append(_fix("plural_twin", "keywords", f"keyword “{value}” merged into its "
                              f"singular “{singular}”", value, singular))
    return out, fixes


def _twin(value: str, seen: Sequence[str]) -> tuple[int, str] | None:
    """The index of ``value``'s singular/plural twin in ``seen`` and the singular form."""
    mine = value.split(" ")
    for index, other in enumerate(seen):
        theirs = other.split(" ")
        if len(theirs) != len(mine) or theirs[:-1] != mine[:-1]:
            continue
        if is_plural_of(mine[-1], theirs[-1]):
            return index, other
        if is_plural_of(theirs[-1], mine[-1]):
            return index, value
    return None


def strip_extension(name: str) -> tuple[str, list[Issue]]:
    lowered = name.lower()
    for ext in _EXTENSIONS:
        if lowered.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], [_fix(
                "extension_removed", "file_name",
                f"file name carried “{ext}”: removed (galleryflow adds it)", name, name[: -len(ext)],
            )]
    return name, []


def name_stem(file_name: str) -> str:
    """What uniqueness compares: lowercase, no directory, no extension."""
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    for ext in _EXTENSIONS:
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def normalise_file_name(name: str, max_chars: int) -> tuple[str, list[Issue]]:
    """Extension cut, then capitals, spaces, underscores and accents made a slug, bounded.

    A path (``/``, ``\\``, ``..``) is left as it is: that is not a cosmetic fault,
    and the file-name check blocks it.
    """
    value, fixes = strip_extension(collapse(name))
    if "/" in value or "\\" in value or ".." in value:
        return value, fixes
    slug = slugify(value, max_chars)
    if slug and slug != value:
        fixes.append(_fix("file_name_slugified", "file_name",
                          "file name made lowercase ASCII words joined by hyphens", value, slug))
        value = slug
    return value, fixes


def unique_name(name: str, taken: Callable[[str], bool], taken_at: datetime | None = None,
                max_chars: int = 60) -> str:
    """``name`` when free, else the first free of: name + capture time (``-1736``,
    ``-173605``), name + ``-2`` … ``-999``. Deterministic: the same inputs give the
    same name, so a rerun names a photo as before."""
    if not taken(name):
        return name
    suffixes = []
    if taken_at is not None:
        suffixes += [f"{taken_at:%H%M}", f"{taken_at:%H%M%S}"]
    suffixes += [str(n) for n in range(2, 1000)]
    for suffix in suffixes:
        if name.endswith("-" + suffix):
            continue
        head = name[: max(1, max_chars - len(suffix) - 1)].rstrip("-")
        candidate = f"{head}-{suffix}"
        if not taken(candidate):
            return candidate
    raise ValueError(f"no free web file name left for “{name}” (999 variants taken)")


def make_unique(name: str, taken: Callable[[str], bool], taken_at: datetime | None,
                max_chars: int) -> tuple[str, list[Issue]]:
    free = unique_name(name, taken, taken_at, max_chars)
    if free == name:
        return name, []
    return free, [_fix("file_name_made_unique", "file_name",
                       f"file name “{name}” is already used by another photo or on the site: "
                       f"named “{free}”", name, free)]


def normalise_draft(draft: Draft, max_name_chars: int) -> tuple[Draft, list[Issue]]:
    """Every normaliser on every field; the fixed draft and what was fixed."""
    fixes: list[Issue] = []
    values = {}
    for name in ("caption", "alt_text", "subject"):
        values[name], found = normalise_text(name, getattr(draft, name))
        fixes += found
    values["keywords"], found = normalise_keywords(draft.keywords)
    fixes += found
    values["file_name"], found = normalise_file_name(draft.file_name, max_name_chars)
    fixes += found
    return Draft(**values), fixes
