"""Snapshots of rows a session changes but did not create, for the session's rollback.

A row inserted by this session (``created_session_id == image_set_id``) is simply
deleted on rollback; any other row gets its column values recorded in the
session's :class:`~galleryflow.core.ledger.SessionLedger` before its first change
(first touch wins, so the snapshot is the state before the session).

``metadata_quality`` has no creator column: a proof row that did not exist
before the session is recorded under the id ``-review_id`` with the values
``{"review_id": …, "__created__": True}``, which means "created by this
session: delete the proof of that review row on rollback".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect

from galleryflow.db.models import Proof, Photo
from galleryflow.core.ledger import SessionLedger


def column_values(obj: Any) -> dict[str, Any]:
    """Every mapped column of an ORM object by attribute name (JSON-safe except datetimes)."""
    return {attr.key: getattr(obj, attr.key) for attr in inspect(obj).mapper.column_attrs}


def snapshot_row(ledger: SessionLedger, row: Photo) -> None:
    """Record ``row``'s values before this session changes it (unless the session made it)."""
    if row.created_session_id == ledger.image_set_id:
        return
    ledger.record_snapshot(Photo.__tablename__, row.id, column_values(row))


def snapshot_proof(ledger: SessionLedger, row: Photo, proof: Proof | None) -> None:
    """Record the proof's values (or that it is new) before this session writes it."""
    if row.created_session_id == ledger.image_set_id:
        return  # deleted with its row (ON DELETE CASCADE)
    if proof is None or proof.id is None:
        ledger.record_snapshot(Proof.__tablename__, -row.id,
                               {"review_id": row.id, "__created__": True})
    else:
        ledger.record_snapshot(Proof.__tablename__, proof.id, column_values(proof))
