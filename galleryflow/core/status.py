"""The row status machine: the one place that says which moves are legal.

::

    new → scored → captioned → awaiting_review → approved | rejected → published
                                                  ↑  (regenerate: back to scored)
    failed beside any step; a failed row resumes at the step it failed in.

No row reaches ``published`` without ``approved``; a published row never moves
again (the site has it). Rollback restores a row's *previous* values wholesale
and so does not go through here: it undoes a transition rather than making one.
"""

from __future__ import annotations

from enum import StrEnum


class RowStatus(StrEnum):
    NEW = "new"
    SCORED = "scored"
    CAPTIONED = "captioned"
    AWAITING_REVIEW = "awaiting_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    PUBLISHED = "published"
    FAILED = "failed"


class SetStatus(StrEnum):
    RUNNING = "running"
    AWAITING_REVIEW = "awaiting_review"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    # A rollback that raised: the ledger is kept and the next run (or `galleryflow
    # recover`) finishes it.
    ROLLBACK_FAILED = "rollback_failed"


class ProofStatus(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    BLOCKED = "blocked"


class IllegalTransition(ValueError):
    """A row was asked to move where the status machine does not allow."""

    def __init__(self, current: str, target: str, what: str = "row") -> None:
        super().__init__(f"illegal status transition for {what}: {current} → {target}")
        self.current = current
        self.target = target


S = RowStatus
_ALLOWED: dict[RowStatus, frozenset[RowStatus]] = {
    S.NEW: frozenset({S.NEW, S.SCORED, S.FAILED}),
    # scored → scored: a rescore; scored → new: the content changed on refresh.
    S.SCORED: frozenset({S.SCORED, S.NEW, S.CAPTIONED, S.FAILED}),
    S.CAPTIONED: frozenset({S.CAPTIONED, S.NEW, S.SCORED, S.AWAITING_REVIEW, S.FAILED}),
    # awaiting_review → scored: "regenerate" sends the row back through stage 7.
    S.AWAITING_REVIEW: frozenset(
        {S.AWAITING_REVIEW, S.NEW, S.SCORED, S.APPROVED, S.REJECTED, S.FAILED}
    ),
    S.APPROVED: frozenset({S.APPROVED, S.PUBLISHED, S.AWAITING_REVIEW, S.FAILED}),
    S.REJECTED: frozenset({S.REJECTED, S.AWAITING_REVIEW}),
    S.PUBLISHED: frozenset({S.PUBLISHED}),
    # A failed row resumes at the stage that failed; it may not jump the gate.
    S.FAILED: frozenset({S.FAILED, S.NEW, S.SCORED, S.CAPTIONED, S.AWAITING_REVIEW}),
}

# Rows a human has decided on (or the site holds): stage refreshes leave them be.
LOCKED_STATUSES = frozenset({S.APPROVED, S.REJECTED, S.PUBLISHED})


def can_transition(current: str | RowStatus, target: str | RowStatus) -> bool:
    return RowStatus(target) in _ALLOWED[RowStatus(current)]


def check_transition(current: str | RowStatus, target: str | RowStatus, what: str = "row") -> RowStatus:
    """Return ``target`` as a RowStatus, or raise :class:`IllegalTransition`."""
    target = RowStatus(target)
    if not can_transition(current, target):
        raise IllegalTransition(str(RowStatus(current)), str(target), what)
    return target
