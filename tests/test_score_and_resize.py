"""Stages 5 and 6 in one chunk: one decode per photo for the scores and the
model-ready image, the same pixels as each stage alone, and nothing decoded or
hashed again on a rerun."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from galleryflow.core.fsutil import HASHES
from galleryflow.core.settings import Settings
from galleryflow.imaging.decode import DECODES
from galleryflow.imaging.shared import open_derived, sharing_decodes
from tasks import scoring
from tasks.model_resize import write_model_image
from tasks.score_and_resize import score_and_resize, score_and_resize_chunk
from tasks.scoring import ScoreInput, score_images, scoring_setup
from tests.fixtures.photos import make_set, write_odd_images
from tests.fixtures.rows import by_name, insert_set, load_photos

pytestmark = pytest.mark.usefixtures("db", "prefect_api", "no_weights")


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    # Larger than the model image, so that both stages really reduce; a unique set
    # name gives bytes new to the result cache.
    folder = make_set(tmp_path / "sets", f"quay-{uuid.uuid4().hex[:8]}", 3, size=(1800, 1200))
    return sorted(folder.glob("*.jpg"))


def _assert_same_as_each_stage_alone(gf_home: Settings, rows, images: bool = True) -> None:
    """Each row's scores are those stage 5 alone computes from the photo, and (with
    ``images``) its model image is byte for byte the one stage 6 alone makes."""
    for row in rows:
        alone = score_images([ScoreInput(sha256=row.sha256, path=Path(row.incoming_path))],
                             scoring_setup(gf_home))[0]
        assert {c: getattr(row, c) for c in scoring.SCORE_COLUMNS} == alone.row_values()
        if images:
            target = Path(row.ollama_path)
            reference = gf_home.work_dir / "alone" / target.name
            write_model_image(Path(row.incoming_path), reference, gf_home.model_resize.long_edge,
                              gf_home.model_resize.quality, gf_home.shared_decode_edge)
            assert target.read_bytes() == reference.read_bytes()


def _decodes() -> dict[str, int]:
    return {key: n for key, n in DECODES.snapshot().items() if "[check]" not in key}


def test_one_decode_per_photo_for_both_stages_then_none(gf_home: Settings, photos):
    inserted = insert_set(gf_home, files=photos, status="new", exif=False)
    DECODES.reset()
    HASHES.reset()

    scores, images = score_and_resize(inserted.row_ids, inserted.image_set_id, gf_home)

    assert (scores.stage, images.stage) == ("scoring", "model_resize")
    assert [o.outcome for o in scores.outcomes] == ["ok"] * 3
    assert [o.outcome for o in images.outcomes] == ["ok"] * 3
    assert sum(_decodes().values()) == 3, _decodes()  # one per photo, by stage 5
    assert all(key.startswith("tasks.scoring") for key in _decodes())
    assert HASHES.total() == 0  # the rows' sha256 is trusted: their stamps match

    rows = by_name(load_photos(inserted.row_ids))
    assert all(row.status == "scored" for row in rows.values())
    _assert_same_as_each_stage_alone(gf_home, [rows[path.name] for path in photos])
    assert scores.seconds > 0 and images.seconds > 0

    # A rerun (another session of the same set): cached scores, existing images.
    DECODES.reset()
    HASHES.reset()
    scores, images = score_and_resize(inserted.row_ids, inserted.image_set_id + 1, gf_home)
    assert [o.outcome for o in scores.outcomes] == ["ok"] * 3
    assert {o.outcome for o in images.outcomes} == {"skipped"}
    assert _decodes() == {} and HASHES.total() == 0

    # Model images gone (a rollback, a cleanup): made again from one decode each.
    for row in rows.values():
        Path(row.ollama_path).unlink()
    DECODES.reset()
    score_and_resize(inserted.row_ids, inserted.image_set_id + 2, gf_home)
    assert sum(_decodes().values()) == 3
    assert all(key.startswith("tasks.model_resize") for key in _decodes())
    assert all(Path(r.ollama_path).is_file() for r in by_name(load_photos(inserted.row_ids)).values())


def test_a_file_that_does_not_decode_is_tried_once_and_reported_by_both_stages(
        gf_home: Settings, photos, tmp_path):
    write_odd_images(tmp_path / "odd", photos[0])
    files = [photos[0], tmp_path / "odd" / "truncated.jpg"]
    inserted = insert_set(gf_home, files=files, status="new", exif=False)
    DECODES.reset()

    scores, images = score_and_resize(inserted.row_ids, inserted.image_set_id, gf_home)

    assert sum(_decodes().values()) == 2  # the truncated file's failed decode is not retried
    outcomes = {(o.stage, o.file): o for o in scores.outcomes + images.outcomes}
    assert outcomes[("scoring", "truncated.jpg")].outcome == "warning"
    assert outcomes[("model_resize", "truncated.jpg")].outcome == "failed"
    assert "truncated.jpg" in outcomes[("model_resize", "truncated.jpg")].message
    assert outcomes[("model_resize", photos[0].name)].outcome == "ok"
    rows = by_name(load_photos(inserted.row_ids))
    assert rows["truncated.jpg"].status == "failed"
    assert rows["truncated.jpg"].error_category == "model_resize"
    assert rows["truncated.jpg"].brisque_source.startswith("fallback: cannot decode")


def test_a_copy_changed_since_intake_fails_both_stages_without_a_decode(gf_home: Settings,
                                                                        photos):
    inserted = insert_set(gf_home, files=photos, status="new", exif=False)
    changed = by_name(load_photos(inserted.row_ids))[photos[0].name]
    Path(changed.incoming_path).write_bytes(photos[1].read_bytes())  # not what intake hashed
    DECODES.reset()
    HASHES.reset()

    scores, images = score_and_resize(inserted.row_ids, inserted.image_set_id, gf_home)

    for report in (scores, images):
        outcome = next(o for o in report.outcomes if o.file == photos[0].name)
        assert outcome.outcome == "failed"
        assert f"{photos[0].name}: content changed since intake" in outcome.message
    assert sum(_decodes().values()) == 2 and HASHES.total() == 0  # the other two photos
    row = by_name(load_photos(inserted.row_ids))[photos[0].name]
    assert row.status == "failed" and row.brisque_score is None and row.ollama_path is None


def test_derived_sizes_do_not_depend_on_sharing(photos):
    alone = open_derived(photos[0], 512, 1024)
    with sharing_decodes(1024) as shared:
        model = open_derived(photos[0], 1024, 1024)
        again = open_derived(photos[0], 512, 1024)
        assert photos[0] in shared
    assert alone.tobytes() == again.tobytes() and max(model.size) == 1024


def test_chunk_task_returns_both_reports(gf_home: Settings, photos):
    inserted = insert_set(gf_home, files=photos[:2], status="new", exif=False)
    reports = score_and_resize_chunk(inserted.row_ids, inserted.image_set_id)
    assert [r.stage for r in reports] == ["scoring", "model_resize"]
    assert [r.ok for r in reports] == [2, 2]


def _make_ahead(gf_home: Settings, inserted) -> list[bool]:
    """What intake does after copying each photo: decode it once and leave the scoring
    input and the model-ready image for stages 5-6."""
    from galleryflow.core.ledger import SessionLedger
    from tasks.intake import IntakeItem, make_ahead

    ledger = SessionLedger(gf_home, inserted.image_set_id)
    made = []
    for row in load_photos(inserted.row_ids):
        item = IntakeItem(set_name=row.set_key, name=row.original_name,
                          source_path=row.incoming_path)
        made.append(make_ahead(item, row.sha256, Path(row.incoming_path), gf_home, ledger))
    return made


def test_made_at_intake_then_nothing_decoded_and_the_same_results(gf_home: Settings, photos):
    """Intake's one decode feeds both stages: stages 5-6 decode nothing, and the scores
    and model images are exactly those each stage makes alone from its own decode."""
    from galleryflow.core.ledger import SessionLedger

    inserted = insert_set(gf_home, files=photos, status="new", exif=False)
    DECODES.reset()
    assert _make_ahead(gf_home, inserted) == [True] * 3
    assert sum(_decodes().values()) == 3 and all(k.startswith("tasks.intake") for k in _decodes())
    scratch = SessionLedger(gf_home, inserted.image_set_id).scratch
    assert len(list(scratch.glob("*.pixels"))) == 3

    DECODES.reset()
    scores, images = score_and_resize(inserted.row_ids, inserted.image_set_id, gf_home)
    assert _decodes() == {}
    assert [o.outcome for o in scores.outcomes] == ["ok"] * 3
    assert [o.outcome for o in images.outcomes] == ["ok"] * 3
    assert all("made at intake" in o.message for o in images.outcomes)
    assert list(scratch.glob("*.pixels")) == []  # taken: the store holds only work in flight

    rows = by_name(load_photos(inserted.row_ids))
    _assert_same_as_each_stage_alone(gf_home, [rows[path.name] for path in photos])
    # The model images are this session's: a rollback removes them.
    created = SessionLedger(gf_home, inserted.image_set_id).created_files()
    assert {Path(r.ollama_path) for r in rows.values()} <= set(created)


def test_a_photo_intake_cannot_decode_is_left_to_stages_5_and_6(gf_home: Settings, photos,
                                                                 tmp_path: Path):
    """Damage inside complete scan data passes validation's structure check; intake's
    decode fails quietly (nothing stored), and stages 5-6 fail that row, naming it."""
    from galleryflow.core.ledger import SessionLedger

    odd = tmp_path / "odd"
    write_odd_images(odd, photos[0])
    inserted = insert_set(gf_home, files=[photos[0], odd / "truncated.jpg"], status="new",
                          exif=False)
    assert _make_ahead(gf_home, inserted) == [True, False]
    assert len(list(SessionLedger(gf_home, inserted.image_set_id).scratch.glob("*.pixels"))) == 1
    scores, images = score_and_resize(inserted.row_ids, inserted.image_set_id, gf_home)
    rows = by_name(load_photos(inserted.row_ids))
    assert rows["truncated.jpg"].status == "failed"
    assert "truncated.jpg" in (rows["truncated.jpg"].error or "")
    assert rows[photos[0].name].status == "scored"


def test_a_damaged_stored_input_is_decoded_again(gf_home: Settings, photos):
    """A stored input cut short (a full disk, a crash the rename did not cover) is not
    trusted: the photo is decoded as if nothing were stored, with the same scores."""
    from galleryflow.core.ledger import SessionLedger

    inserted = insert_set(gf_home, files=photos[:1], status="new", exif=False)
    _make_ahead(gf_home, inserted)
    (stored,) = SessionLedger(gf_home, inserted.image_set_id).scratch.glob("*.pixels")
    stored.write_bytes(stored.read_bytes()[:1000])
    DECODES.reset()
    scores, _ = score_and_resize(inserted.row_ids, inserted.image_set_id, gf_home)
    assert sum(_decodes().values()) == 1
    _assert_same_as_each_stage_alone(gf_home, load_photos(inserted.row_ids), images=False)
