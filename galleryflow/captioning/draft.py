"""The values stage 7 passes around: a :class:`Draft`, an :class:`Issue` found in it,
the :class:`Evidence` about its photo and the :class:`DraftContext` it is judged in.

Severities of an issue (the proof shows each by name):

- ``error``: the field cannot be accepted as is (repair when the model can fix it, then block);
- ``fixed``: galleryflow corrected it deterministically, no model call; ``before`` and
  ``after`` say what changed (a filler opening cut, keywords lower-cased, a web name
  made unique);
- ``unverified``: a keyword kept only because the caption names it (no classifier, no
  evidence): the reviewer sees it marked, it is never silently trusted;
- ``warning``: worth a reviewer's look, never blocks;
- ``overridden``: an error a reviewer declared a false positive, with their reason.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from galleryflow.core.settings import CaptionSettings, DraftLimits

DRAFT_FIELDS = ("caption", "alt_text", "keywords", "subject", "file_name")
TEXT_FIELDS = ("caption", "alt_text", "subject")

Severity = Literal["error", "fixed", "unverified", "warning", "overridden"]


class Draft(BaseModel):
    """What the vision model must return; its JSON schema is sent as Ollama's ``format``."""

    caption: str = Field(
        description="One or two plain sentences a gallery visitor reads under the photo. "
        "Describe what is visible; no opening such as 'This image shows'."
    )
    alt_text: str = Field(
        description="Short text for screen readers: what is in the photo, under 160 characters."
    )
    keywords: list[str] = Field(
        description="3 to 15 lowercase keywords, each a word or short phrase visible in the "
        "photo or given in the evidence."
    )
    subject: str = Field(description="The main subject in a few words.")
    file_name: str = Field(
        description="A web file name: lowercase ASCII words joined by hyphens, no extension, "
        "specific to this photo."
    )


class Issue(BaseModel):
    """One fault found in a draft (or one fix made to it), in words a photographer understands.

    ``message`` never quotes text from the evidence: it goes back to the model in a
    repair prompt, outside the ``<evidence>`` block.
    """

    code: str
    field: str
    message: str
    severity: Severity = "error"
    model_fixable: bool = True
    before: Any = None
    after: Any = None

    @property
    def blocking(self) -> bool:
        return self.severity == "error"


class Identifier(BaseModel):
    """An identifier read from a file or folder name or a text field: a fact the caption
    may use and must not contradict."""

    kind: str  # "aircraft registration", "flight number", "train", "race number", "product code"
    value: str
    source: str  # "file name", "folder name", "ImageDescription", …


class Evidence(BaseModel):
    """Facts about one photo that go into the prompt as *data* (never as instructions)."""

    date_taken: str | None = None
    taken_at: datetime | None = None
    time_of_day: str | None = None
    month: str | None = None
    season: str | None = None
    daylight: str | None = None  # "sun 35° above the horizon", "night (sun 20° below)"
    camera: str | None = None
    lens: str | None = None
    gps: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    place: str | None = None  # named from GPS by the offline gazetteer
    location: str | None = None  # the row's, the set's or the configured place
    subject_hint: str | None = None
    set_name: str | None = None  # the folder name: subject words and dates, never a place
    embedded: dict[str, str] = Field(default_factory=dict)  # the original's own text fields
    identifiers: list[Identifier] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)  # classifier labels for this photo
    hints_source: str | None = None  # None: no classifier ran (no weights)
    # Values a person already wrote (edited fields): the draft must agree with them.
    photographer: dict[str, str] = Field(default_factory=dict)
    # Regenerate: the caption the reviewer sent back; the new one must differ.
    previous_caption: str | None = None

    def texts(self) -> dict[str, str]:
        """Every free-text value by name (where planted instructions could hide)."""
        out: dict[str, str] = {}
        for name in ("camera", "lens", "location", "subject_hint", "set_name"):
            value = getattr(self, name)
            if value:
                out[name] = value
        for name, value in self.embedded.items():
            out[name] = value
        for name, value in self.photographer.items():
            out[f"photographer {name}"] = value
        return out

    @property
    def places(self) -> list[str]:
        """Place names the evidence states (GPS place, location, the original's text fields)."""
        return [p for p in (self.place, self.location, *self.embedded.values()) if p]

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    def prompt_data(self) -> dict[str, Any]:
        """The evidence as it appears in the prompt (no internal fields, no empties)."""
        data = self.model_dump(exclude={"taken_at", "latitude", "longitude", "hints_source"},
                               exclude_none=True)
        for name in ("photographer", "embedded", "identifiers", "hints"):
            if not data.get(name):
                data.pop(name, None)
        if self.hints:
            data["hints"] = {"labels": self.hints, "source": self.hints_source or "classifier"}
        return data


class DraftContext(BaseModel):
    """Everything the guardrails compare a draft with."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    evidence: Evidence = Field(default_factory=Evidence)
    # Captions and alt texts of the set, the rows pending review and what is published.
    other_captions: list[str] = Field(default_factory=list)
    other_alt_texts: list[str] = Field(default_factory=list)
    taken_names: Collection[str] = Field(default_factory=set)
    limits: DraftLimits = Field(default_factory=DraftLimits)
    captioning: CaptionSettings = Field(default_factory=CaptionSettings)
    # Fields a person edited: their values stand, the model's are ignored.
    locked: dict[str, Any] = Field(default_factory=dict)
    # (field, code) pairs a reviewer overrode as false positives, with their reason.
    overrides: dict[tuple[str, str], str] = Field(default_factory=dict)

    def is_taken(self, name: str) -> bool:
        return name in self.taken_names
