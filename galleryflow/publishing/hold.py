"""The zero-blocked rule: a set publishes only when none of its rows is still blocked
and undecided.

A row *holds its set back* while its metadata proof is ``blocked`` and nobody has
decided it yet (``awaiting_review``): a reviewer must fix, regenerate or reject it
first. Rejected rows never hold a set back, nor do rows already decided. The rule is
per set (``set_key``: the folder, across sessions); ``publish.allow_blocked_sets``
relaxes it for a run, and the publish summary then says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from galleryflow.core.status import ProofStatus, RowStatus
from galleryflow.db import Photo, Proof

RULE = "a set publishes only when none of its rows is blocked and undecided"


class HoldingRow(BaseModel):
    """A row that holds its set back, and why (its blocking proof issues)."""

    row_id: int
    set_key: str
    file: str
    reasons: list[str]

    def describe(self) -> str:
        why = "; ".join(self.reasons) or "metadata proof blocked"
        return f"{self.file} is blocked and undecided ({why})"


def blocking_reasons(issues: list[dict[str, Any]] | None) -> list[str]:
    """The blocking issues of a proof, in words (``field: message``), each once (a proof
    records every repair attempt's issues), whatever else each issue records."""
    found: dict[str, None] = {}
    for issue in issues or []:
        if issue.get("severity", "error") != "error":
            continue
        field, message = issue.get("field", ""), issue.get("message", "")
        found[f"{field}: {message}" if field else str(message)] = None
    return list(found)


def holding_rows(session: Session, set_keys: Collection[str]) -> dict[str, list[HoldingRow]]:
    """Per set, the rows that hold it back (empty sets are left out)."""
    if not set_keys:
        return {}
    query = (select(Photo, Proof)
             .outerjoin(Proof, Proof.review_id == Photo.id)
             .where(Photo.set_key.in_(list(set_keys)),
                    Photo.status == RowStatus.AWAITING_REVIEW,
                    Photo.proof_status == ProofStatus.BLOCKED)
             .order_by(Photo.set_key, Photo.original_name))
    held: dict[str, list[HoldingRow]] = defaultdict(list)
    for row, proof in session.execute(query):
        held[row.set_key].append(HoldingRow(
            row_id=row.id, set_key=row.set_key, file=row.original_name,
            reasons=blocking_reasons(proof.issues if proof else None)))
    return dict(held)


def held_message(set_key: str, rows: list[HoldingRow]) -> str:
    """Why a set is held back, in one line."""
    return f"set {set_key} is held back ({RULE}): " + "; ".join(r.describe() for r in rows)
