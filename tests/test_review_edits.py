"""The review gate's helpers: edits go through the same guardrails as model output."""

from __future__ import annotations

from pathlib import Path

import pytest

from galleryflow.db.engine import session_scope
from galleryflow.db.models import Proof, Photo
from galleryflow.core.settings import Settings
from galleryflow.core.status import ProofStatus, RowStatus
from tasks.captioning import DraftEdits, apply_edit, validate_edit
from tests.fixtures.rows import insert_set, rows

pytestmark = pytest.mark.usefixtures("db")

DRAFTS = [
    {"caption": "Rolling hills near the lake shore under a pale sky in clear morning light.",
     "alt_text": "Green hills beneath a pale sky near the lake shore",
     "keywords": ["hill", "sky", "lake shore"], "subject": "hills at the lake shore",
     "web_file_name": "lake-shore-hills-morning-0900.jpg"},
    {"caption": "Layered ridges fade toward the horizon at the lake shore, the sky pale above.",
     "alt_text": "Layered ridges and a pale sky at the lake shore",
     "keywords": ["ridge", "horizon", "lake shore"], "subject": "ridges at the lake shore",
     "web_file_name": "lake-shore-ridges-morning-0930.jpg"},
]


@pytest.fixture
def drafted(gf_home: Settings, tmp_path: Path) -> list[int]:
    inserted = insert_set(gf_home, tmp_path, "lake-shore", 2, status=RowStatus.AWAITING_REVIEW)
    with session_scope() as session:
        for row_id, values in zip(inserted.row_ids, DRAFTS):
            row = session.get(Photo, row_id)
            for key, value in values.items():
                setattr(row, key, value)
            row.proof_status = ProofStatus.PASSED
            session.add(Proof(
                review_id=row_id, passed=True, generation_mode="model", model="llava:7b",
                field_states={f: "accepted" for f in ("caption", "alt_text", "keywords",
                                                      "subject", "file_name")}, issues=[],
            ))
    return inserted.row_ids


def errors(issues) -> set[tuple[str, str]]:
    return {(i.field, i.code) for i in issues if i.blocking}


def test_unchanged_draft_validates_clean(drafted: list[int]) -> None:
    row = rows(drafted)[0]
    assert errors(validate_edit(row, {})) == set()


@pytest.mark.parametrize("edits, expected", [
    ({"caption": "This image shows hills near the lake shore."}, ("caption", "filler_opening")),
    ({"caption": DRAFTS[1]["caption"]}, ("caption", "duplicate_caption")),
    ({"file_name": "lake-shore-ridges-morning-0930"}, ("file_name", "duplicate_file_name")),
    ({"web_file_name": "../../outside"}, ("file_name", "path_separator")),
    ({"keywords": ["hill", "2026", "sky"]}, ("keywords", "digit_only")),
    ({"caption": "Hills at the lake shore under a starry night sky, the stars bright."},
     ("caption", "time_contradiction")),
])
def test_bad_edits_are_caught(drafted: list[int], edits: dict, expected: tuple[str, str]) -> None:
    row = rows(drafted)[0]
    assert expected in errors(validate_edit(row, edits))


def test_person_keyword_without_evidence_is_a_warning(drafted: list[int]) -> None:
    row = rows(drafted)[0]
    issues = validate_edit(row, DraftEdits(keywords=["hill", "sky", "heron"]))
    assert not errors(issues)
    assert any(i.code == "keyword_without_evidence" and i.severity == "warning" for i in issues)


def test_apply_edit_refuses_an_edit_with_errors(drafted: list[int]) -> None:
    result = apply_edit(drafted[0], {"caption": "This image shows hills."})
    assert not result.applied
    assert rows(drafted)[0].caption == DRAFTS[0]["caption"]


def test_apply_edit_writes_fields_and_the_proof(drafted: list[int]) -> None:
    new = "Morning haze lifts off the lake shore hills while the sky stays pale."
    refused = apply_edit(drafted[0], {"caption": new, "file_name": "Lake Shore Haze.jpg"})
    assert not refused.applied  # not a slug: the message suggests one
    assert "lake-shore-haze" in refused.issues[-1].message
    result = apply_edit(drafted[0], {"caption": new, "file_name": "lake-shore-haze.jpg"},
                        reviewer="ana")
    assert result.applied and result.proof_passed
    row = rows(drafted)[0]
    assert row.caption == new and row.reviewer == "ana"
    assert row.web_file_name == "lake-shore-haze.jpg"
    assert sorted(row.edited_fields) == ["caption", "file_name"]
    assert row.proof.field_states["caption"] == "edited"
    assert row.proof.field_states["alt_text"] == "accepted"


def test_fixing_a_blocked_field_unblocks_the_proof(drafted: list[int]) -> None:
    with session_scope() as session:
        row = session.get(Photo, drafted[0])
        row.caption = "This image shows hills."
        row.proof_status = ProofStatus.BLOCKED
        proof = session.get(Proof, 1)
        proof.passed = False
        proof.field_states = {**proof.field_states, "caption": "blocked"}
        proof.issues = [{"code": "filler_opening", "field": "caption", "severity": "error",
                         "message": "caption starts with the filler", "attempt": 3, "model": "m"}]
    result = apply_edit(drafted[0], {"caption": "Hills roll down to the lake shore under a pale sky."})
    assert result.applied and result.proof_passed
    row = rows(drafted)[0]
    assert row.proof_status == ProofStatus.PASSED and row.proof.passed
    assert not [i for i in row.proof.issues if i["field"] == "caption"]  # the old fault is gone
