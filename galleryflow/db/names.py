"""Web file names reserved in the state DB: the one place that decides who owns a name.

A name is *reserved* (a ``web_name`` row, unique on its case-folded key) when a
draft is accepted (stage 7), when a person edits it, and at the latest when a row
is published. The unique constraint arbitrates: two chunks, two runs or two
workers that want the same name at the same time cannot both get it, whatever
they read before. A row may hold several names over its life (each regenerate
may draft another); :func:`reserve` releases the row's other names unless it is
published, so the names a row no longer uses go back.

Keys are the published file name lower-cased. Web names are ASCII (``[A-Za-z0-9._-]``,
checked by the targets), and for ASCII ``lower()`` is exactly the folding of every
MySQL/MariaDB ``_ci`` collation and of SQLite's NOCASE, so a name that collides in
the gallery table collides here first.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from galleryflow.db.models import Photo, WebName


def name_key(file_name: str) -> str:
    """The reservation key of a published file name: case-folded like the gallery."""
    return file_name.strip().lower()


def holder(session: Session, file_name: str) -> int | None:
    """The review row that holds ``file_name``, or None."""
    return session.scalar(select(WebName.review_id).where(WebName.name_key == name_key(file_name)))


def reserve(session: Session, review_id: int, file_name: str, *, release_others: bool = True) -> int | None:
    """Reserve ``file_name`` for ``review_id`` (idempotent); None when it is now this
    row's, else the id of the row that holds it.

    Runs in a savepoint of ``session``: a lost race leaves the caller's transaction
    usable. The reservation becomes visible to others when the caller commits, and
    the unique key keeps any other transaction from taking the name meanwhile.
    """
    current = holder(session, file_name)
    if current is not None and current != review_id:
        return current
    if current is None:
        try:
            with session.begin_nested():
                session.add(WebName(name_key=name_key(file_name), file_name=file_name,
                                    review_id=review_id))
        except IntegrityError:
            winner = holder(session, file_name)
            if winner != review_id:
                return winner if winner is not None else -1
    if release_others:
        published = session.scalar(select(Photo.status).where(Photo.id == review_id)) == "published"
        if not published:
            session.execute(delete(WebName).where(WebName.review_id == review_id,
                                                  WebName.name_key != name_key(file_name)))
    return None
