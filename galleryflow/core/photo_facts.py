"""The camera facts of a photo: read from EXIF (stage 3), stored on its review row,
published with it (the gallery table).

One definition for all three, so the gallery table can never miss or misname a
field stage 3 reads. Width and height are the pixel size after EXIF orientation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class CameraFacts(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    GPS_FIELDS: ClassVar[tuple[str, ...]] = ("gps_lat", "gps_lon", "gps_alt")

    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    exposure_time: str | None = None
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    gps_alt: float | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def of(cls, row: Any, keep_gps: bool = True) -> CameraFacts:
        """The facts recorded on ``row`` (any object with these attributes);
        without ``keep_gps`` the location fields are left empty."""
        facts = cls.model_validate(row)
        return facts if keep_gps else facts.model_copy(update=dict.fromkeys(cls.GPS_FIELDS))
