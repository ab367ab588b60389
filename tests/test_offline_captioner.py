"""The offline captioner: deterministic, evidence-only, never silent."""

from __future__ import annotations

from datetime import datetime
from itertools import combinations
from pathlib import Path

import pytest

from galleryflow.intake.samples import SampleSpec, write_sample
from galleryflow.core.settings import Settings
from galleryflow.core.status import ProofStatus, RowStatus
from galleryflow.captioning.plan import prepare_plan
from tasks.captioning import caption_chunk
from galleryflow.core.stages import StageError
from galleryflow.captioning.guardrails import DraftContext, Evidence, check_draft, similarity
from tasks.model_resize import resize_rows
from galleryflow.captioning.offline import OFFLINE_MODEL, image_stats, offline_draft
from tests.fixtures.ollama import PRIMARY, point_at
from tests.fixtures.rows import insert_set, load_photos
from tests.services import free_port
from tests.services.ollama_stub import OllamaStub


def _sample(tmp_path: Path, hour: int) -> Path:
    spec = SampleSpec(name=f"s{hour}.jpg", width=480, height=320,
                      taken_at=datetime(2026, 6, 14, hour, 0), seed=hour)
    return write_sample(tmp_path / spec.name, spec)


def test_statistics_follow_the_light(tmp_path: Path) -> None:
    night = image_stats(_sample(tmp_path, 23))
    noon = image_stats(_sample(tmp_path, 12))
    assert night.brightness < noon.brightness
    assert noon.orientation == "landscape"
    assert noon.upper_minus_lower > 0  # sky above hills in the sample landscapes


def test_draft_is_deterministic_and_passes_the_guardrails(tmp_path: Path) -> None:
    stats = image_stats(_sample(tmp_path, 9))
    evidence = Evidence(date_taken="2026-06-14 09:00", taken_at=datetime(2026, 6, 14, 9, 0),
                        time_of_day="morning", month="June 2026", camera="Canon EOS R6",
                        set_name="lake shore")
    first = offline_draft(evidence, stats, frame=2)
    assert first == offline_draft(evidence, stats, frame=2)
    assert first.file_name == "lake-shore-2026-06-14-0900"
    checked, issues = check_draft(first, DraftContext(evidence=evidence))
    assert not [i for i in issues if i.blocking], issues
    assert checked.keywords == first.keywords  # every keyword has evidence
    assert "morning" in first.caption.lower() or "09:00" in first.caption


def test_taken_name_gets_a_suffix(tmp_path: Path) -> None:
    stats = image_stats(_sample(tmp_path, 9))
    evidence = Evidence(taken_at=datetime(2026, 6, 14, 9, 0), set_name="lake shore")
    draft = offline_draft(evidence, stats, taken={"lake-shore-2026-06-14-0900"})
    assert draft.file_name == "lake-shore-2026-06-14-0900-2"


def test_no_exif_still_drafts(tmp_path: Path) -> None:
    stats = image_stats(_sample(tmp_path, 14))
    draft = offline_draft(Evidence(set_name="harbour evening"), stats, frame=4)
    checked, issues = check_draft(draft, DraftContext(evidence=Evidence(set_name="harbour evening")))
    assert not [i for i in issues if i.blocking], issues
    # The folder's time word is not this photo's time: only "harbour" is used.
    assert draft.file_name == "harbour-005" and "evening" not in draft.caption.lower()


@pytest.mark.usefixtures("prefect_api", "db")
def test_offline_mode_when_no_ollama_and_allowed(gf_home: Settings, tmp_path: Path) -> None:
    gf_home.ollama.host = f"http://127.0.0.1:{free_port()}"
    gf_home.ollama.offline_allowed = True
    inserted = insert_set(gf_home, tmp_path, "lake-shore", 6)
    resize_rows(inserted.row_ids, inserted.image_set_id, gf_home)
    plan = prepare_plan(gf_home)
    assert plan.mode == "offline" and gf_home.ollama.host in plan.reason

    report = caption_chunk(inserted.row_ids, inserted.image_set_id, plan)
    assert {o.outcome for o in report.outcomes} == {"warning"}  # flagged, never silent
    assert all("OFFLINE" in o.message for o in report.outcomes)
    done = load_photos(inserted.row_ids)
    for row in done:
        assert row.status == RowStatus.AWAITING_REVIEW
        assert row.proof_status == ProofStatus.PASSED, row.proof.issues
        assert row.generation_mode == row.proof.generation_mode == "offline"
        assert row.proof.fallback_used and row.proof.model == OFFLINE_MODEL
        assert "offline captioner" in row.proof.fallback_reason
    threshold = gf_home.ollama.limits.similarity_threshold
    for a, b in combinations(done, 2):
        assert similarity(a.caption, b.caption) < threshold
        assert a.web_file_name != b.web_file_name


@pytest.mark.usefixtures("prefect_api", "db")
def test_offline_never_replaces_a_reachable_server(gf_home: Settings, stub: OllamaStub) -> None:
    point_at(gf_home, stub)
    gf_home.ollama.offline_allowed = True
    stub.remove_model(PRIMARY)  # reachable but wrong: the user must fix it, not get offline drafts
    with pytest.raises(StageError, match="ollama pull"):
        prepare_plan(gf_home)


def test_missing_facts_leave_no_stray_punctuation():
    from galleryflow.captioning.offline import _sentence

    assert _sentence("Harbour evening,", "", ":", "a dark frame") == "Harbour evening, a dark frame."
    assert _sentence("Lake,", "at dawn", "3 July:", "cool tones") == "Lake, at dawn 3 July: cool tones."
    assert _sentence("Lake,", "", "", "") == "Lake."


def test_every_structure_is_plainly_english_so_the_detector_stays_unloaded(monkeypatch) -> None:
    """Each caption and alt text structure, whatever facts fill it in, settles the
    language check by its English function words: drafting offline never loads
    lingua's models (~2.4 s and ~400 MB per process); the check itself is unchanged."""
    from itertools import product

    from galleryflow.captioning import checks, offline

    asked: list[str] = []
    monkeypatch.setattr(checks, "detect_language",
                        lambda text, language: asked.append(text) or ("en", 1.0, 1.0))
    for place, when, date, clock, camera, layout, light, texture in product(
            ["Pragelato-Rua", "the harbour", "this set", "Lake Thun Oberhofen"],
            ["in the early morning", ""], ["on 1 June 2026", ""], ["at 06:00", ""],
            ["with a NIKON Z 6_2", ""],
            ["light spread evenly from top to bottom", "a lighter upper half over a darker lower half"],
            ["dark", "evenly lit"], ["finely textured", "smooth"]):
        words = offline._Words(place=place, when=when, date=date, clock=clock, camera=camera,
                               layout=layout, light=light, contrast="strong contrast",
                               tone="cool", colour="blue", vividness="muted", texture=texture,
                               orientation="landscape")
        for caption, alt_text in offline._captions(words):
            for text in (caption, alt_text):
                assert checks.check_language("caption", text, "en") == []
    assert asked == []


def test_a_foreign_caption_still_reaches_the_detector(monkeypatch) -> None:
    from galleryflow.captioning import checks

    monkeypatch.setattr(checks, "detect_language", lambda text, language: ("de", 0.95, 0.01))
    issues = checks.check_language(
        "caption", "Ein dunkler Morgen am Hafen von Pragelato, kühle blaue Töne mit weichem Kontrast.", "en")
    assert [i.code for i in issues] == ["wrong_language"]


@pytest.mark.usefixtures("prefect_api", "db")
def test_stage_7_starts_the_web_images_of_passing_drafts(gf_home: Settings, tmp_path: Path) -> None:
    """As a chunk's drafts are written, the web images of the rows whose proof passed
    are made ahead (as if approved unchanged): the publish then reuses them."""
    from galleryflow.publishing.config import derivative_spec, resolve_target
    from galleryflow.publishing.derivatives import make_derivatives
    from galleryflow.publishing.names import publish_file_name
    from galleryflow.publishing.units import unit_for_row

    gf_home.ollama.host = f"http://127.0.0.1:{free_port()}"
    gf_home.ollama.offline_allowed = True
    inserted = insert_set(gf_home, tmp_path, "harbour-walk", 3)
    resize_rows(inserted.row_ids, inserted.image_set_id, gf_home)
    caption_chunk(inserted.row_ids, inserted.image_set_id, prepare_plan(gf_home))
    spec = derivative_spec(resolve_target(gf_home), gf_home)
    for row in load_photos(inserted.row_ids):
        assert row.proof_status == ProofStatus.PASSED
        item = unit_for_row(row, publish_file_name(row.web_file_name, row.original_name),
                            None, spec.keep_gps).derivative_input
        assert make_derivatives(item, spec, gf_home.work_dir).reused
