"""Small shared types for the stage tasks: chunking and per-file outcomes.

A Prefect task run costs ~12 ms of orchestration and one set can hold 10,000
images, so per-image work runs in *chunks* (``settings.chunk_size``, default 64):
one task run per chunk, per-image progress through :mod:`galleryflow.core.progress`,
per-file outcomes in the chunk's report (which the flow turns into a table
artifact).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class FileOutcome(BaseModel):
    """What one stage did with one file, in words a photographer understands."""

    file: str
    stage: str
    # "changed": a file re-exported under a known name with other content (a new photo)
    outcome: Literal["ok", "warning", "excluded", "failed", "skipped", "changed"]
    message: str = ""


class ChunkReport(BaseModel):
    stage: str
    outcomes: list[FileOutcome] = Field(default_factory=list)
    seconds: float = Field(
        default=0.0,
        description="Time the chunk spent on this stage, when one chunk task runs several "
                    "stages (5 and 6): the flow splits its stage timings by it.",
    )

    @property
    def ok(self) -> int:
        return sum(o.outcome in ("ok", "warning", "skipped", "changed") for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.outcome == "failed" for o in self.outcomes)

    def add(self, file: str, outcome: str, message: str = "") -> None:
        self.outcomes.append(FileOutcome(file=file, stage=self.stage, outcome=outcome, message=message))


class StageError(RuntimeError):
    """A blocking error: the session must roll back (stages 2–7)."""
