"""The facts about one photo that the prompt carries and keywords may draw on
(:func:`build_evidence`): EXIF and the original's own text fields, the set's location
and subject, the place named from GPS (offline gazetteer), the sun and the season at
capture, identifiers, the classifier's hints and a person's edits. A pure function of
the row, its set and the settings, so it is tested without a model.

A folder name is evidence only for what it states (a date, subject words): it is
never a place. Without a location, GPS or a configured place, no draft may say where
a photo was taken.
"""

from __future__ import annotations

import re
from datetime import datetime

from galleryflow.captioning.draft import Evidence
from galleryflow.captioning.identifiers import collect_identifiers
from galleryflow.captioning.rows import edited_fields, row_draft_values
from galleryflow.captioning.timeplace import daylight, locate, nearest_place, season_of, time_of_day
from galleryflow.core.settings import Settings
from galleryflow.db.models import ImageSet, Photo

# A date in a folder name: 2026-09, 2026_09_14, 20260914 (stated, not a subject word).
_FOLDER_DATE = re.compile(r"(?<!\d)(?:19|20)\d{2}(?:[-_ .]?(?:0[1-9]|1[0-2])(?:[-_ .]?(?:0[1-9]|[12]\d|3[01]))?)?(?!\d)")


def folder_words(name: str | None) -> tuple[str | None, str | None]:
    """A folder name split into (subject words, the date it states)."""
    if not name:
        return None, None
    date = _FOLDER_DATE.search(name)
    words = re.sub(r"[-_.]+", " ", _FOLDER_DATE.sub(" ", name))
    words = " ".join(w for w in words.split() if not w.isdigit())
    stated = re.sub(r"[-_ .]", "-", date.group(0)) if date else None
    return words or None, stated


def _camera(row: Photo) -> str | None:
    if row.camera_make and row.camera_model and row.camera_model.startswith(
            row.camera_make.split()[0]):
        return row.camera_model  # "Canon" + "Canon EOS R6" → "Canon EOS R6"
    return " ".join(dict.fromkeys(p for p in (row.camera_make, row.camera_model) if p)) or None


def build_evidence(row: Photo, image_set: ImageSet | None, settings: Settings,
                   previous_caption: str | None = None) -> Evidence:
    """The facts about one photo that the prompt carries (and keywords may draw on)."""
    taken: datetime | None = row.taken_at
    cfg = settings.captioning
    gps = None
    lat, lon = row.gps_lat, row.gps_lon
    place = None
    if lat is not None and lon is not None:
        gps = (f"{abs(lat):.4f}° {'N' if lat >= 0 else 'S'}, "
               f"{abs(lon):.4f}° {'E' if lon >= 0 else 'W'}")
        if row.gps_alt is not None:
            gps += f", {row.gps_alt:.0f} m"
        if cfg.reverse_geocode:
            place = nearest_place(lat, lon).label()
    location = row.location or (image_set.location if image_set else None) or settings.location
    if lat is None and location:
        found = locate(location)  # the set's location stands in for GPS (sun, places)
        if found:
            lat, lon = found
    locked = edited_fields(row)
    current = row_draft_values(row)
    photographer = {name: (", ".join(current[name]) if name == "keywords" else current[name])
                    for name in sorted(locked) if current[name]}
    folder = image_set.name if image_set else row.set_key
    subject_words, _ = folder_words(folder)
    embedded = dict(row.embedded_text or {})
    hints = row.visual_hints or {}
    identifiers = collect_identifiers([("file name", row.original_name),
                                       ("folder name", folder),
                                       *embedded.items()])
    return Evidence(
        date_taken=f"{taken:%Y-%m-%d %H:%M}" if taken else None,
        taken_at=taken,
        time_of_day=time_of_day(taken.hour + taken.minute / 60) if taken else None,
        month=f"{taken:%B %Y}" if taken else None,
        season=season_of(taken.month, lat) if taken else None,
        daylight=daylight(lat, lon, taken) if taken and lat is not None and lon is not None
        else None,
        camera=_camera(row),
        lens=row.lens or None,
        gps=gps,
        latitude=lat,
        longitude=lon,
        place=place,
        location=location,
        subject_hint=image_set.subject if image_set else None,
        set_name=subject_words,
        embedded=embedded,
        identifiers=identifiers,
        hints=[label for label, _score in hints.get("labels", [])],
        hints_source=hints.get("source"),
        photographer=photographer,
        previous_caption=previous_caption,
    )


def lacks_location(evidence: Evidence) -> bool:
    """No GPS, no location, no configured place: no draft may say where the photo was taken."""
    return not (evidence.gps or evidence.location or evidence.place or any(
        k in evidence.embedded for k in ("IPTC City", "IPTC Country", "XMP City", "XMP Country")))
