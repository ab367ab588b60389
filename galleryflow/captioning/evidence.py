"""The facts about one photo that the prompt carries and keywords may draw on
(:func:`build_evidence`: EXIF, the set's location and subject, a person's edits); a
pure function of the row, its set and the settings, so it is tested without a model.
"""

from __future__ import annotations

import re

from galleryflow.captioning.guardrails import Evidence, time_of_day
from galleryflow.captioning.rows import edited_fields, row_draft_values
from galleryflow.core.settings import Settings
from galleryflow.db.models import ImageSet, Photo


def build_evidence(row: Photo, image_set: ImageSet | None, settings: Settings,
                   previous_caption: str | None = None) -> Evidence:
    """The facts about one photo that the prompt carries (and keywords may draw on)."""
    taken = row.taken_at
    camera = " ".join(dict.fromkeys(
        p for p in (row.camera_make, row.camera_model) if p
    )) or None
    if row.camera_make and row.camera_model and row.camera_model.startswith(row.camera_make.split()[0]):
        camera = row.camera_model  # "Canon" + "Canon EOS R6" → "Canon EOS R6"
    gps = None
    if row.gps_lat is not None and row.gps_lon is not None:
        gps = (f"{abs(row.gps_lat):.4f}° {'N' if row.gps_lat >= 0 else 'S'}, "
               f"{abs(row.gps_lon):.4f}° {'E' if row.gps_lon >= 0 else 'W'}")
        if row.gps_alt is not None:
            gps += f", {row.gps_alt:.0f} m"
    locked = edited_fields(row)
    current = row_draft_values(row)
    photographer = {name: (", ".join(current[name]) if name == "keywords" else current[name])
                    for name in sorted(locked) if current[name]}
    set_name = image_set.name if image_set else row.set_key
    return Evidence(
        date_taken=f"{taken:%Y-%m-%d %H:%M}" if taken else None,
        taken_at=taken,
        time_of_day=time_of_day(taken.hour + taken.minute / 60) if taken else None,
        month=f"{taken:%B %Y}" if taken else None,
        camera=camera,
        lens=row.lens or None,
        gps=gps,
        location=row.location or (image_set.location if image_set else None) or settings.location,
        subject_hint=image_set.subject if image_set else None,
        set_name=re.sub(r"[-_]+", " ", set_name).strip() if set_name else None,
        photographer=photographer,
        previous_caption=previous_caption,
    )
