"""Identifier evidence: registrations, flight and train numbers, race numbers and product
codes read from a photo's file name, its folder name and the original's text fields.

They go to the prompt as facts the caption may use; a draft that names an identifier
of the same kind that is not among them contradicts the evidence (``PH-BXB`` for a
photo of ``PH-BXA``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from galleryflow.captioning.draft import Identifier, Issue

# Kinds in the order they are tried; a span claimed by one is not read again.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # ICAO nationality prefix, hyphen, 3–5 marks: PH-BXA, D-AIBL, HB-JNA, 9V-SKA, G-EUPT
    ("aircraft registration", re.compile(r"(?<![A-Za-z0-9])((?:[A-Z]{1,2}|[0-9][A-Z]|[A-Z][0-9])"
                                         r"-[A-Z]{3,5})(?![A-Za-z0-9])")),
    # US civil aircraft: N + 1–5 digits + up to 2 letters
    ("aircraft registration", re.compile(r"(?<![A-Za-z0-9])(N[1-9][0-9]{0,4}[A-Z]{0,2})"
                                         r"(?![A-Za-z0-9])")),
    ("train", re.compile(r"(?<![A-Za-z0-9])((?:ICE|TGV|IC|EC|EN|NJ|IR|IRE|RE|RB|RJX?|S|AVE|"
                         r"THA|EST)[ _]?[0-9]{1,5})(?![A-Za-z0-9])")),
    ("flight number", re.compile(r"(?i:flight)[ _-]*([A-Z0-9]{2}[ ]?[0-9]{1,4})(?![A-Za-z0-9])"
                                 r"|(?<![A-Za-z0-9])((?:[A-Z]{2}|[A-Z][0-9]|[0-9][A-Z])[0-9]{2,4})"
                                 r"(?![A-Za-z0-9])")),
    ("race number", re.compile(r"(?i:(?<![A-Za-z])(?:bib|race|start(?:nummer)?|startnr|no\.?|nr\.?"
                               r"|number)[ _#-]*|#)([0-9]{1,4})(?![0-9])")),
    ("product code", re.compile(r"(?<![A-Za-z0-9])([A-Z]{2,5}-[0-9]{3,8}(?:-[A-Z0-9]{1,4})?)"
                                r"(?![A-Za-z0-9])")),
]
# Camera file names are not identifiers: IMG_1234, DSC01234, _MG_0001, PXL_2026…
_CAMERA_FILE = re.compile(r"^(?:IMG|DSC[FN]?|_?MG|PXL|DJI|GOPR|GH\d|P\d{3}|DSCF|MVIMG|VID|"
                          r"PANO|SAM|CIMG|PICT|R\d{3})[_-]?\d+", re.IGNORECASE)


def find_identifiers(text: str, source: str) -> list[Identifier]:
    """Identifiers in one text (a file name with its extension cut, a folder name, a field)."""
    if source == "file name":
        text = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", text)
        if _CAMERA_FILE.match(text):
            return []
    found: list[Identifier] = []
    claimed: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            group = next(g for g in range(1, (pattern.groups or 0) + 1) if match.group(g))
            start, end = match.span(group)
            if any(s < end and start < e for s, e in claimed):
                continue
            value = match.group(group).replace("_", " ").strip()
            if kind == "flight number" and value.isdigit():
                continue
            claimed.append((start, end))
            found.append(Identifier(kind=kind, value=value, source=source))
    return found


def collect_identifiers(sources: Iterable[tuple[str, str | None]]) -> list[Identifier]:
    """Identifiers from several (source, text) pairs, each value once."""
    seen: dict[tuple[str, str], Identifier] = {}
    for source, text in sources:
        for ident in find_identifiers(text or "", source):
            seen.setdefault((ident.kind, _key(ident.value)), ident)
    return list(seen.values())


def _key(value: str) -> str:
    return re.sub(r"[\s_-]+", "", value).upper()


def check_identifiers(field: str, text: str, identifiers: list[Identifier]) -> list[Issue]:
    """A registration, flight, train or race number in a draft that the evidence does not
    give, where the evidence gives one of that kind."""
    if not identifiers:
        return []
    given = {(i.kind, _key(i.value)) for i in identifiers}
    kinds = {i.kind for i in identifiers}
    probe = text if field != "file_name" else text.upper()
    for ident in find_identifiers(probe, field):
        if ident.kind in kinds and (ident.kind, _key(ident.value)) not in given:
            same = ", ".join(sorted(i.value for i in identifiers if i.kind == ident.kind))
            return [Issue(code="identifier_contradiction", field=field,
                          message=f"{field} gives {ident.kind} “{ident.value}” but the evidence "
                          f"says {same}")]
    return []


def identifier_words(identifiers: list[Identifier]) -> set[str]:
    """Identifier values as keyword evidence: ``ph-bxa``, ``lx318`` and ``lx 318``."""
    out: set[str] = set()
    for ident in identifiers:
        value = ident.value.lower()
        out |= {value, value.replace(" ", ""), value.replace("-", ""), value.replace(" ", "-")}
    return out
