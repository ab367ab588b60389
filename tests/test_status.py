"""The row status machine: legal moves pass, illegal ones raise, in one place."""

from __future__ import annotations

import pytest

from galleryflow.db import ImageSet, Photo, session_scope
from galleryflow.core.status import IllegalTransition, RowStatus, can_transition, check_transition

HAPPY_PATH = ["new", "scored", "captioned", "awaiting_review", "approved", "published"]


def test_happy_path_is_legal():
    for current, target in zip(HAPPY_PATH, HAPPY_PATH[1:]):
        assert check_transition(current, target) == RowStatus(target)


@pytest.mark.parametrize(
    "current,target",
    [("new", "approved"), ("new", "published"), ("scored", "published"),
     ("awaiting_review", "published"), ("rejected", "published"), ("published", "new"),
     ("published", "failed"), ("failed", "approved"), ("failed", "published")],
)
def test_illegal_moves_raise(current, target):
    assert not can_transition(current, target)
    with pytest.raises(IllegalTransition, match=f"{current} → {target}"):
        check_transition(current, target)


def test_failed_beside_every_working_step():
    for status in ("new", "scored", "captioned", "awaiting_review", "approved"):
        assert can_transition(status, "failed")


def test_orm_enforces_the_machine(db):
    with session_scope() as session:
        image_set = ImageSet(set_key="s", name="s", source_dir="/x")
        session.add(image_set)
        session.flush()
        row = Photo(set_key="s", original_name="a.jpg", image_set_id=image_set.id,
                        created_session_id=image_set.id, sha256="0" * 64, source_path="/x/a.jpg")
        session.add(row)
        session.flush()
        assert row.status == "new"
        row.status = "scored"
        with pytest.raises(IllegalTransition, match="s/a.jpg: scored → published"):
            row.status = "published"
        assert row.status == "scored"
