"""What a reviewer sees of a page: inline thumbnails (small, no metadata), the proof
whatever states it holds, near duplicates side by side; the form's fixed rows and its
bulk choices in words; answers described; the terminal prompt's shortcuts."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

from PIL import Image
from rich.console import Console

from galleryflow.core.settings import Settings
from galleryflow.db import Proof
from galleryflow.imaging.stats import phash_distance
from galleryflow.publishing.hold import HoldingRow
from galleryflow.review.answer import OpenGate, build_answer, describe_answer
from galleryflow.review.forms import (
    BULK_APPROVE_PASSED,
    BULK_REJECT_ALL,
    ReviewDecision,
    ReviewRowInput,
    row_to_input,
)
from galleryflow.review.page import (
    keep_duplicates_together,
    near_duplicate_groups,
    page_markdown,
    proof_lines,
    thumbnail_uri,
)
from tests.fixtures.rows import RowSpec, drafted, insert_set, load_photos


def _decode_uri(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_thumbnails_are_small_jpegs_without_metadata(db: str, gf_home: Settings, tmp_path: Path) -> None:
    ids = insert_set(gf_home, tmp_path / "sets", "lake-shore", size=(1600, 1000),
                     per_row=drafted([RowSpec(status="awaiting_review")] * 3)).row_ids
    found = load_photos(ids)
    assert found[0].gps_lat is not None  # the source carries a GPS position
    thumb = _decode_uri(thumbnail_uri(found[0], gf_home))
    assert thumb.format == "JPEG" and max(thumb.size) == 160
    assert not thumb.getexif() and "exif" not in thumb.info and "icc_profile" not in thumb.info

    markdown = page_markdown(found, {}, gf_home, page=1, pages=1, links=["**Review page**: x"])
    assert markdown.count("](data:image/jpeg;base64,") == 3
    assert "**Review page**: x" in markdown
    # 25 such rows stay a sane artifact: a few kB per thumbnail.
    assert len(markdown) < 3 * 12_000


def test_a_row_without_an_image_file_is_shown_without_one(db: str, gf_home: Settings,
                                                          tmp_path: Path) -> None:
    ids = insert_set(gf_home, tmp_path / "sets", "lake-shore",
                     per_row=drafted([RowSpec(status="awaiting_review")])).row_ids
    row = load_photos(ids)[0]
    Path(row.incoming_path).unlink()
    assert thumbnail_uri(row, gf_home) is None
    assert "data:image" not in page_markdown([row], {}, gf_home, 1, 1)


def _photo(row_id: int, phash: str | None) -> SimpleNamespace:
    return SimpleNamespace(id=row_id, phash=phash)


def test_near_duplicates_are_grouped_and_kept_together() -> None:
    a, b, c, d = "f0f0f0f0f0f0f0f0", "f0f0f0f0f0f0f0f1", "0f0f0f0f0f0f0f0f", "0f0f0f0f0f0f0f0e"
    assert phash_distance(a, b) == 1 and phash_distance(a, c) == 64
    photos = [_photo(1, a), _photo(2, c), _photo(3, None), _photo(4, b), _photo(5, d)]
    groups = near_duplicate_groups(photos, max_distance=8)
    assert groups == {1: 1, 4: 1, 2: 2, 5: 2}
    assert [p.id for p in keep_duplicates_together(photos, 8)] == [1, 4, 2, 5, 3]
    assert [p.id for p in keep_duplicates_together(photos, 0)] == [1, 2, 3, 4, 5]


def test_the_proof_is_shown_whatever_states_and_facts_it_holds() -> None:
    row = SimpleNamespace(review_note="edit refused: caption: too short")
    proof = Proof(field_states={"caption": "fixed", "keywords": "unverified", "alt_text": "accepted"},
                  issues=[{"field": "caption", "code": "case", "message": "sentence case",
                           "severity": "fix", "before": "the lake", "after": "The lake"},
                          {"field": "keywords", "code": "ungrounded", "message": "not in evidence",
                           "severity": "warning", "override": {"reason": "known landmark"}}],
                  fallback_used=False)
    lines = proof_lines(row, proof)
    assert lines[0] == "fields: caption fixed, keywords unverified"
    assert lines[1] == "caption: sentence case (fix) [before: the lake; after: The lake]"
    assert "known landmark" in lines[2] and lines[2].startswith("keywords: not in evidence (warning)")
    assert lines[-1] == "reviewer: edit refused: caption: too short"


def test_held_sets_are_named_in_the_page(db: str, gf_home: Settings, tmp_path: Path) -> None:
    ids = insert_set(gf_home, tmp_path / "sets", "lake-shore",
                     per_row=drafted([RowSpec(status="awaiting_review")])).row_ids
    held = {"lake-shore": [HoldingRow(row_id=9, set_key="lake-shore", file="lake-shore-09.jpg",
                                      reasons=["caption: starts with filler"])]}
    text = page_markdown(load_photos(ids), {}, gf_home, 1, 1, held=held)
    assert "**Sets held back**" in text
    assert "lake-shore-09.jpg is blocked and undecided (caption: starts with filler)" in text


def test_the_form_fixes_its_rows_and_reads_bulk_choices_as_words() -> None:
    from prefect._internal.pydantic.v2_schema import create_v2_schema
    from prefect.utilities.schema_tools import validate

    cards = [ReviewRowInput(row_id=3, file="pier/pier-01.jpg", summary="proof passed"),
             ReviewRowInput(row_id=4, file="pier/pier-02.jpg", summary="proof blocked")]
    form = ReviewDecision.for_page("## Review", cards)
    schema = create_v2_schema(form.__name__, model_base=form)
    rows_schema = schema["properties"]["rows"]
    assert rows_schema["minItems"] == rows_schema["maxItems"] == 2
    assert [p["properties"]["row_id"]["const"] for p in rows_schema["prefixItems"]] == [3, 4]
    assert rows_schema["prefixItems"][1]["properties"]["file"]["const"] == "pier/pier-02.jpg"
    assert BULK_APPROVE_PASSED in schema["properties"]["bulk"]["enum"]
    assert not any("_" in choice for choice in schema["properties"]["bulk"]["enum"])

    answer = {"rows": [c.model_dump() for c in cards], "bulk": BULK_APPROVE_PASSED}
    assert validate(answer, schema) == []
    swapped = {**answer, "rows": [{**answer["rows"][0], "row_id": 4}, answer["rows"][1]]}
    assert validate(swapped, schema)  # an identity changed: refused by the server
    assert validate({**answer, "rows": answer["rows"][:1]}, schema)  # a card deleted: refused
    assert ReviewDecision.model_validate({"bulk": "reject_all"}).bulk == BULK_REJECT_ALL
    # Forms of other pages are untouched by this one's rows.
    assert "prefixItems" not in ReviewDecision.model_json_schema()["properties"]["rows"]


def test_every_answer_says_what_it_decides() -> None:
    gate = OpenGate(flow_run_id="r", flow_run_name="n", key="review-1", description="", rows=[
        ReviewRowInput(row_id=1, file="s/a.jpg", summary="proof passed · aesthetic 5"),
        ReviewRowInput(row_id=2, file="s/b.jpg", summary="proof blocked · aesthetic 4"),
        ReviewRowInput(row_id=3, file="s/c.jpg", summary="proof passed · aesthetic 3")])
    assert describe_answer(gate, build_answer(gate, approve_all=True)) == (
        "2 approved, 1 left undecided (bulk: approve rows whose proof passed)")
    assert describe_answer(gate, build_answer(gate, reject={"c.jpg"}, approve={"s/a.jpg"}, end_review=True)) == (
        "1 approved, 1 rejected, 1 left undecided; review ended after this page")


def test_the_terminal_prompt_shows_its_shortcut_letters() -> None:
    from galleryflow.app.cli import EDITED_PROMPT, ROW_PROMPT

    console = Console(record=True, width=200)
    console.print(ROW_PROMPT)
    console.print(EDITED_PROMPT)
    text = console.export_text()
    assert "[a]pprove, [r]eject, re[g]enerate, [e]dit caption, [v]iew photo, [s]kip" in text
    assert "then [a]pprove or [s]kip" in text


def test_form_rows_carry_the_subject(db: str, gf_home: Settings, tmp_path: Path) -> None:
    ids = insert_set(gf_home, tmp_path / "sets", "lake-shore",
                     per_row=drafted([RowSpec(status="awaiting_review")])).row_ids
    assert row_to_input(load_photos(ids)[0]).subject == "Lake shore at dawn"


def test_status_says_awaiting_review_for_a_set_at_the_gate(db: str, gf_home: Settings,
                                                           tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from galleryflow.app.cli import app
    from galleryflow.db import ImageSet, session_scope

    inserted = insert_set(gf_home, tmp_path / "sets", "lake-shore", per_row=drafted(
        [RowSpec(status="awaiting_review"), RowSpec(status="approved")]))
    with session_scope() as session:
        session.get(ImageSet, inserted.image_set_id).status = "completed"
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "awaiting review (1 photo)" in result.output and "completed" not in result.output
    as_json = CliRunner().invoke(app, ["status", "--json"])
    assert '"status": "awaiting_review"' in as_json.output and '"awaiting_review": 1' in as_json.output
