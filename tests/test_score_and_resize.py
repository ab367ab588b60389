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
    for path in photos:
        row = rows[path.name]
        assert row.status == "scored"
        # The same scores as stage 5 alone, and the same model image as stage 6 alone.
        alone = score_images([ScoreInput(sha256=row.sha256, path=Path(row.incoming_path))],
                             scoring_setup(gf_home))[0]
        assert {c: getattr(row, c) for c in scoring.SCORE_COLUMNS} == alone.row_values()
        target = Path(row.ollama_path)
        reference = gf_home.work_dir / "alone" / target.name
        write_model_image(Path(row.incoming_path), reference, gf_home.model_resize.long_edge,
                          gf_home.model_resize.quality, gf_home.shared_decode_edge)
        assert target.read_bytes() == reference.read_bytes()
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
