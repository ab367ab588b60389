"""The review gate's helpers: edits go through the same guardrails as model output."""

from __future__ import annotations

from pathlib import Path

import pytest

from galleryflow.db.engine import session_scope
from galleryflow.db.models import Proof, Photo
from galleryflow.core.settings import Settings
from galleryflow.core.status import ProofStatus, RowStatus
from tasks.captioning import DraftEdits, apply_edit, validate_edit
from tests.fixtures.rows import insert_set, load_photos

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
    row = load_photos(drafted)[0]
    assert errors(validate_edit(row, {})) == set()


@pytest.mark.parametrize("edits, expected", [
    ({"caption": "Hills near the lake shore, as we can see in this photo."}, ("caption", "meta_talk")),
    ({"caption": "Hills near the lake shore <script>alert(1)</script>."}, ("caption", "markup")),
    ({"alt_text": "Hills near the lake shore #nofilter"}, ("alt_text", "hashtag")),
    ({"caption": DRAFTS[1]["caption"]}, ("caption", "duplicate_caption")),
    ({"file_name": "lake-shore-ridges-at-midnight"}, ("file_name", "time_contradiction")),
    ({"web_file_name": "../../outside"}, ("file_name", "path_separator")),
    ({"keywords": ["hill", "2026", "sky"]}, ("keywords", "digit_only")),
    ({"caption": "Hills at the lake shore under a starry night sky, the stars bright."},
     ("caption", "time_contradiction")),
])
def test_bad_edits_are_caught(drafted: list[int], edits: dict, expected: tuple[str, str]) -> None:
    row = load_photos(drafted)[0]
    assert expected in errors(validate_edit(row, edits))


def test_person_keyword_without_evidence_is_a_warning(drafted: list[int]) -> None:
    row = load_photos(drafted)[0]
    issues = validate_edit(row, DraftEdits(keywords=["hill", "sky", "heron"]))
    assert not errors(issues)
    assert any(i.code == "keyword_without_evidence" and i.severity == "warning" for i in issues)


def test_apply_edit_refuses_an_edit_with_errors(drafted: list[int]) -> None:
    result = apply_edit(drafted[0], {"caption": "This image shows hills."})
    assert not result.applied
    assert load_photos(drafted)[0].caption == DRAFTS[0]["caption"]


def test_apply_edit_writes_fields_and_the_proof(drafted: list[int]) -> None:
    new = "Morning haze lifts off the lake shore hills while the sky stays pale."
    # The same normalisers as model output: the name is made a slug, recorded as fixed.
    result = apply_edit(drafted[0], {"caption": new, "file_name": "Lake Shore Haze.jpg"},
                        reviewer="ana")
    assert result.applied and result.proof_passed
    fix = next(i for i in result.issues if i.code == "file_name_slugified")
    assert (fix.before, fix.after) == ("Lake Shore Haze", "lake-shore-haze")
    row = load_photos(drafted)[0]
    assert row.caption == new and row.reviewer == "ana"
    assert row.web_file_name == "lake-shore-haze.jpg"
    assert any(i["code"] == "file_name_slugified" for i in row.proof.issues)
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
    row = load_photos(drafted)[0]
    assert row.proof_status == ProofStatus.PASSED and row.proof.passed
    assert not [i for i in row.proof.issues if i["field"] == "caption"]  # the old fault is gone


def test_an_edit_is_normalised_like_model_output(drafted: list[int]) -> None:
    result = apply_edit(drafted[0], {"keywords": ["Hills", "hill", "Sky", "Lake Shore"],
                                     "file_name": "lake-shore-ridges-morning-0930"})
    assert result.applied
    row = load_photos(drafted)[0]
    assert row.keywords == ["hill", "sky", "lake shore"]
    assert row.web_file_name != "lake-shore-ridges-morning-0930.jpg"  # taken: made unique
    assert row.web_file_name.startswith("lake-shore-ridges-morning-0930-")
    fixed = {i["code"] for i in row.proof.issues if i.get("severity") == "fixed"}
    assert {"keyword_case", "plural_twin", "file_name_made_unique"} <= fixed


def test_an_edit_clears_only_its_own_fields_faults(drafted: list[int]) -> None:
    with session_scope() as session:
        proof = session.get(Proof, 1)
        proof.passed = False
        proof.field_states = {**proof.field_states, "caption": "blocked", "alt_text": "blocked"}
        proof.issues = [
            {"code": "meta_talk", "field": "caption", "severity": "error", "message": "m",
             "attempt": 3, "model": "m"},
            {"code": "hedging", "field": "alt_text", "severity": "error", "message": "h",
             "attempt": 3, "model": "m"}]
        session.get(Photo, drafted[0]).proof_status = ProofStatus.BLOCKED
    result = apply_edit(drafted[0], {"caption": "Hills roll down to the lake shore under a pale sky."})
    assert result.applied and not result.proof_passed
    row = load_photos(drafted)[0]
    assert [i["field"] for i in row.proof.issues if i.get("severity") == "error"] == ["alt_text"]
    assert row.proof.field_states["alt_text"] == "blocked"


def test_a_reviewer_overrides_a_false_positive_with_a_reason(drafted: list[int]) -> None:
    from tasks.captioning import apply_override

    with session_scope() as session:
        proof = session.get(Proof, 1)
        proof.passed = False
        proof.field_states = {**proof.field_states, "caption": "blocked"}
        proof.issues = [{"code": "url", "field": "caption", "severity": "error",
                         "message": "caption contains a web address (“tourist.info”)",
                         "attempt": 1, "model": "m"}]
        session.get(Photo, drafted[0]).proof_status = ProofStatus.BLOCKED
    with pytest.raises(ValueError):
        apply_override(drafted[0], [("caption", "url")], "  ")
    result = apply_override(drafted[0], [("caption", "url")], "the sign says Tourist.Info",
                            reviewer="ana")
    assert result.overridden == [("caption", "url")] and result.proof_passed
    row = load_photos(drafted)[0]
    assert row.proof_status == ProofStatus.PASSED
    assert row.proof.field_states["caption"] == "overridden"
    (override,) = row.proof.overrides
    assert override["reason"] == "the sign says Tourist.Info" and override["reviewer"] == "ana"
    assert row.proof.issues[0]["severity"] == "overridden"
