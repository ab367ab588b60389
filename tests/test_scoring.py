"""Stage 5 without weights: statistics, pHash, the documented fallback, odd files,
rows written through the real task in a real Prefect run, and the content cache.

These need no model: with no weight files configured (and every cache pointed at
an empty folder) each model score takes the fallback, exactly as on a fresh install.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image
from prefect import flow

from galleryflow.core.fsutil import sha256_file
from galleryflow.imaging.decode import open_reduced
from galleryflow.imaging.stats import (
    ImageStats,
    fallback_aesthetic,
    fallback_brisque,
    image_stats,
    phash,
    phash_distance,
)
from galleryflow.core.settings import get_settings
from tasks import scoring
from galleryflow.core.stages import ChunkReport
from tasks.scoring import (
    ContentChanged,
    ScoreInput,
    describe_scoring,
    log_scoring_setup,
    score_images,
    scoring_setup,
)
from flows.fanout import score_rows
from tests.fixtures.photos import blurred_copy, make_set, write_odd_images
from tests.fixtures.rows import by_name, insert_set, load_photos
from tests.fixtures.weights import configure_scoring

REPO = Path(__file__).resolve().parent.parent

# No weights anywhere the tests can see: every score takes the recorded fallback.
pytestmark = pytest.mark.usefixtures("no_weights")


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    # A unique set name: its sample seeds (and so the bytes) are new to the result cache.
    folder = make_set(tmp_path / "sets", f"shore-{uuid.uuid4().hex[:8]}", 3, size=(640, 480))
    return sorted(folder.glob("*.jpg"))


def _inputs(paths: list[Path]) -> list[ScoreInput]:
    return [ScoreInput(sha256=sha256_file(p), path=p) for p in paths]


# --- statistics and the formula ------------------------------------------------------------

def test_fallback_formula_on_known_statistics():
    """The documented formula, checked by hand on round numbers."""
    stats = ImageStats(width=100, height=100, brightness=0.5, contrast=0.25, blur=999.0,
                       colourfulness=100.0)
    # sharpness = log10(1000)/3 = 1, exposure = 1, tonal = 1, colour = 1
    assert fallback_brisque(stats) == 0.0
    assert fallback_aesthetic(stats) == 10.0
    flat = ImageStats(width=100, height=100, brightness=0.0, contrast=0.0, blur=0.0,
                      colourfulness=0.0)
    assert fallback_brisque(flat) == 100.0
    assert fallback_aesthetic(flat) == 1.0
    mid = ImageStats(width=100, height=100, brightness=0.75, contrast=0.1, blur=99.0,
                     colourfulness=50.0)
    sharp, expo, tonal, colour = 2 / 3, 0.5, 0.4, 0.5
    assert fallback_brisque(mid) == round(100 * (1 - (0.5 * sharp + 0.25 * expo + 0.25 * tonal)), 4)
    assert fallback_aesthetic(mid) == round(
        1 + 9 * (0.35 * sharp + 0.25 * expo + 0.2 * tonal + 0.2 * colour), 4)


def test_stats_of_a_flat_grey_image():
    stats = image_stats(Image.new("RGB", (64, 48), (128, 128, 128)))
    assert stats.brightness == round(128 / 255, 4)
    assert stats.contrast == 0.0
    assert stats.blur == 0.0
    assert stats.colourfulness == 0.0


def test_sharp_photo_scores_better_than_its_blurred_copy(photos, tmp_path):
    blurred = blurred_copy(photos[0], tmp_path / "blurred.jpg")
    sharp_scores, soft_scores = score_images(_inputs([photos[0], blurred]), scoring_setup())
    assert sharp_scores.blur_score > 3 * soft_scores.blur_score
    assert sharp_scores.brisque_score < soft_scores.brisque_score  # lower is better
    assert sharp_scores.clip_aesthetic_score > soft_scores.clip_aesthetic_score


def test_phash_survives_exif_rotation_and_recompression(photos, tmp_path):
    original = open_reduced(photos[0], 512)
    # The same picture stored rotated, with the EXIF tag that turns it back (6: 90° CW).
    rotated = Image.open(photos[0]).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.jpg", "JPEG", quality=70, exif=exif)
    turned_back = open_reduced(tmp_path / "rotated.jpg", 512)
    assert turned_back.size == original.size
    assert phash_distance(phash(original), phash(turned_back)) <= 4
    other = open_reduced(photos[1], 512)
    assert phash_distance(phash(original), phash(other)) > 10
    assert len(phash(original)) == 16 and int(phash(original), 16) >= 0


# --- the fallback path end to end ----------------------------------------------------------

def test_without_weights_every_model_score_is_the_documented_fallback(photos):
    results = score_images(_inputs(photos), scoring_setup())
    for path, result in zip(photos, results, strict=True):
        stats = image_stats(open_reduced(path, get_settings().scoring.analysis_long_edge))
        assert result.brisque_score == fallback_brisque(stats)
        assert result.clip_aesthetic_score == fallback_aesthetic(stats)
        assert (result.blur_score, result.brightness_score, result.contrast_score) == (
            stats.blur, stats.brightness, stats.contrast)
        assert result.brisque_source.startswith("fallback: no BRISQUE parameter file")
        assert result.clip_aesthetic_source.startswith("fallback: no open_clip checkpoint")
        assert result.stats_source == "stats-v2 @512px"
        assert 0 <= result.brisque_score <= 100 and 1 <= result.clip_aesthetic_score <= 10
        assert result.reasons == []  # the whole setup fell back, not this image


def test_fallback_values_identical_across_runs(photos, tmp_path):
    """Same bytes → same scores, in this process and in a fresh one."""
    first = [r.model_dump() for r in score_images(_inputs(photos), scoring_setup())]
    again = [r.model_dump() for r in score_images(_inputs(photos), scoring_setup())]
    assert first == again
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from galleryflow.core.fsutil import sha256_file\n"
        "from tasks.scoring import ScoreInput, score_images, scoring_setup\n"
        "paths = [Path(p) for p in sys.argv[1:]]\n"
        "items = [ScoreInput(sha256=sha256_file(p), path=p) for p in paths]\n"
        "print(json.dumps([r.model_dump() for r in score_images(items, scoring_setup())]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, *map(str, photos)], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=240)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == first


def test_odd_files_get_fallbacks_with_reasons_and_never_stop_the_batch(photos, tmp_path):
    expected = write_odd_images(tmp_path / "odd", photos[0])
    files = [photos[0]] + [tmp_path / "odd" / name for name in expected]
    results = score_images(_inputs(files), scoring_setup())
    assert len(results) == len(files)
    assert results[0].reasons == []
    for path, result in zip(files[1:], results[1:], strict=True):
        fragment = expected[path.name]
        assert any(fragment in reason for reason in result.reasons), (path.name, result.reasons)
        if fragment == "cannot decode":
            assert result.brisque_score == 100.0 and result.clip_aesthetic_score == 1.0
            assert result.brisque_source.startswith("fallback: cannot decode")
            assert result.blur_score is None and result.phash is None
            assert result.stats_source.startswith("unavailable: cannot decode")
        else:
            assert 0 <= result.brisque_score <= 100
            assert 1 <= result.clip_aesthetic_score <= 10
            assert result.blur_score is not None and result.phash is not None
            assert result.stats_source == "stats-v2 @512px"


def test_a_changed_file_is_refused_not_scored(photos):
    item = ScoreInput(sha256="0" * 64, path=photos[0])
    with pytest.raises(ContentChanged, match="content changed since intake"):
        score_images([item], scoring_setup())


def test_a_recorded_stamp_is_trusted_without_hashing(photos):
    from galleryflow.core.fsutil import HASHES, FileStamp

    item = ScoreInput(sha256=sha256_file(photos[0]), path=photos[0], stamp=FileStamp.of(photos[0]))
    HASHES.reset()
    [result] = score_images([item], scoring_setup())
    assert HASHES.total() == 0 and result.phash is not None
    stale = item.model_copy(update={"stamp": FileStamp(item.stamp.size + 1, item.stamp.mtime_ns)})
    with pytest.raises(ContentChanged, match=f"{photos[0].name}: content changed since intake"):
        score_images([stale], scoring_setup())


# --- setup description --------------------------------------------------------------------

def test_describe_names_the_missing_configured_file(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "brisque_svm_weights.pth"
    settings = configure_scoring(monkeypatch, brisque_params=missing, device="cpu")
    description = describe_scoring(settings)
    assert description.brisque == (
        f"fallback: BRISQUE parameter file {missing} (scoring.brisque_params) does not exist")
    text = "\n".join(description.lines())
    assert "CLIP aesthetic: fallback: no open_clip checkpoint for ViT-L-14" in text
    assert "device cpu" in text


def test_setup_is_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(scoring, "_logged", set())  # whatever earlier tests logged
    caplog.set_level("INFO", logger="tasks.scoring")
    log_scoring_setup()
    log_scoring_setup()
    records = [r for r in caplog.records if "scoring setup" in r.getMessage()]
    assert len(records) == 1
    assert "BRISQUE:        fallback" in records[0].getMessage()


# --- rows in the DB through a real Prefect run ---------------------------------------------

@flow(name="scoring-under-test")
def scoring_flow(row_ids: list[int], image_set_id: int, chunk_size: int) -> list[ChunkReport]:
    return score_rows(row_ids, image_set_id, chunk_size=chunk_size)


def _task_run_states(flow_run_id) -> dict[str, list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    states: dict[str, list[str]] = {}
    for run in runs:
        states.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state_name or "?")
    return states


def _wait_for_states(flow_run_id, task: str, count: int, final: set[str]) -> list[str]:
    """Task run states reach the API asynchronously: poll briefly until all have landed."""
    deadline = time.monotonic() + 30
    while True:
        states = _task_run_states(flow_run_id).get(task, [])
        if (len(states) >= count and all(s in final for s in states)) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


@pytest.mark.integration
def test_score_rows_writes_scores_and_moves_status(prefect_api, db, photos, tmp_path):
    settings = get_settings()
    odd = write_odd_images(tmp_path / "odd", photos[0])
    files = photos + [tmp_path / "odd" / "cmyk.jpg", tmp_path / "odd" / "truncated.jpg"]
    locked = {photos[1].name: "approved"}
    inserted = insert_set(settings, files=files, status="new", statuses=locked, exif=False)
    image_set_id, row_ids = inserted.image_set_id, inserted.row_ids
    # A row whose incoming copy vanished: it fails with a reason, the others go on.
    vanished = tmp_path / "vanished.jpg"
    vanished.write_bytes(photos[2].read_bytes())
    (vanished_id,) = insert_set(settings, name="other-set", files=[vanished], status="new",
                                exif=False).row_ids
    Path(by_name(load_photos([vanished_id]))["vanished.jpg"].incoming_path).unlink()

    reports = scoring_flow(row_ids + [vanished_id], image_set_id, chunk_size=3)

    rows = by_name(load_photos(row_ids + [vanished_id]))
    scored = rows[photos[0].name]
    assert scored.status == "scored"
    assert scored.brisque_source.startswith("fallback: no BRISQUE parameter file")
    assert scored.clip_aesthetic_source.startswith("fallback: no open_clip checkpoint")
    expected = score_images(_inputs([photos[0]]), scoring_setup())[0]
    assert {c: getattr(scored, c) for c in scoring.SCORE_COLUMNS} == expected.row_values()
    assert len(scored.phash) == 16

    approved = rows[photos[1].name]
    assert approved.status == "approved" and approved.brisque_score is None

    assert rows["cmyk.jpg"].status == "scored"
    assert rows["cmyk.jpg"].blur_score is not None
    assert rows["truncated.jpg"].status == "scored"
    assert rows["truncated.jpg"].brisque_source.startswith("fallback: cannot decode")

    assert rows["vanished.jpg"].status == "failed"
    assert "no incoming copy" in rows["vanished.jpg"].error

    outcomes = {o.file: o for report in reports for o in report.outcomes}
    assert outcomes[photos[0].name].outcome == "ok"
    assert outcomes[photos[1].name].outcome == "skipped"
    assert outcomes["cmyk.jpg"].outcome == "warning" and odd["cmyk.jpg"] in outcomes["cmyk.jpg"].message
    assert outcomes["vanished.jpg"].outcome == "failed"
    assert sum(len(r.outcomes) for r in reports) == len(row_ids) + 1


@pytest.mark.integration
def test_rerun_hits_the_cache_and_computes_nothing(prefect_api, db, photos, monkeypatch):
    settings = get_settings()
    inserted = insert_set(settings, files=photos, status="new", exif=False)
    image_set_id, row_ids = inserted.image_set_id, inserted.row_ids
    computed: list[int] = []
    real = scoring.score_images

    def counting(items, setup, threads=4):
        computed.append(len(items))
        return real(items, setup, threads)

    monkeypatch.setattr(scoring, "score_images", counting)

    first = scoring_flow(row_ids, image_set_id, chunk_size=2, return_state=True)
    assert first.is_completed()
    assert sum(computed) == len(photos)
    after_first = {n: r.brisque_score for n, r in by_name(load_photos(row_ids)).items()}
    # Batches are plain calls inside the chunk's task run: no task run per batch.
    _wait_for_states(first.state_details.flow_run_id, "score-chunk", 2, {"Completed"})
    assert "compute-scores" not in _task_run_states(first.state_details.flow_run_id)

    # A second session of the same set: the rows are refreshed from the cache, per
    # photo: no compute task runs at all.
    computed.clear()
    second = scoring_flow(row_ids, image_set_id + 1000, chunk_size=2, return_state=True)
    assert second.is_completed()
    assert computed == []  # not one image decoded or scored again
    _wait_for_states(second.state_details.flow_run_id, "score-chunk", 1, {"Completed"})
    rows = by_name(load_photos(row_ids))
    assert {n: r.brisque_score for n, r in rows.items()} == after_first
    assert all(r.status == "scored" for r in rows.values())

    # Batched otherwise (one chunk, a row left out so every batch shifts): still
    # nothing computed twice.
    computed.clear()
    third = scoring_flow(row_ids[1:], image_set_id + 2000, chunk_size=64, return_state=True)
    assert third.is_completed()
    assert computed == []


@pytest.mark.integration
def test_a_new_photo_beside_cached_ones_is_the_only_one_scored(prefect_api, db, photos,
                                                                 monkeypatch):
    settings = get_settings()
    first = insert_set(settings, files=photos[:2], status="new", exif=False)
    scoring_flow(first.row_ids, first.image_set_id, chunk_size=8)
    computed: list[str] = []
    real = scoring.score_images

    def counting(items, setup, threads=4):
        computed.extend(i.sha256 for i in items)
        return real(items, setup, threads)

    monkeypatch.setattr(scoring, "score_images", counting)
    both = insert_set(settings, name="more-of-it", files=photos[:3], status="new", exif=False)
    scoring_flow(both.row_ids, both.image_set_id, chunk_size=8)
    assert computed == [sha256_file(photos[2])]
    rows = by_name(load_photos(both.row_ids))
    assert all(r.status == "scored" and math.isfinite(r.brisque_score) for r in rows.values())


@pytest.mark.integration
def test_changed_content_fails_that_row_only(prefect_api, db, photos):
    settings = get_settings()
    inserted = insert_set(settings, files=photos, status="new", exif=False)
    image_set_id, row_ids = inserted.image_set_id, inserted.row_ids
    changed = by_name(load_photos(row_ids))[photos[0].name]
    Path(changed.incoming_path).write_bytes(photos[1].read_bytes())  # not what intake hashed

    scoring_flow(row_ids, image_set_id, chunk_size=8)

    rows = by_name(load_photos(row_ids))
    assert rows[photos[0].name].status == "failed"
    assert "content changed since intake" in rows[photos[0].name].error
    assert rows[photos[0].name].brisque_score is None
    assert all(rows[p.name].status == "scored" for p in photos[1:])
    assert all(math.isfinite(rows[p.name].brisque_score) for p in photos[1:])



def test_the_photo_cache_asks_the_server_for_its_storage_once(prefect_api, monkeypatch):
    """Outside a task run, Prefect resolves the default result storage on every write
    (a new client and a request each: ~50 ms a photo); the cache resolves it once,
    and what it writes reads back."""
    import prefect.results

    from galleryflow.core.caching import PhotoCache

    asked = []
    real = prefect.results._read_server_default_result_storage_block_id
    monkeypatch.setattr(prefect.results, "_read_server_default_result_storage_block_id",
                        lambda: asked.append(1) or real())
    cache = PhotoCache("test-scores", {"model": "tiny"})
    values = {f"{i:064x}": {"score": i} for i in range(5)}
    for sha, value in values.items():
        cache.put(sha, value)
    assert cache.get_many(values) == values
    assert len(asked) == 1


def test_a_transient_read_error_is_tried_again_and_a_changed_file_is_not(
        gf_home, photos, monkeypatch):
    """compute_scores runs inside the chunk's task run (no task run per batch); it
    tries a read error again after a pause, as the task's retries did, and never a
    file whose content changed."""
    setup = scoring_setup(gf_home)
    item = ScoreInput(sha256=sha256_file(photos[0]), path=photos[0])
    monkeypatch.setattr(scoring, "READ_RETRY_SECONDS", (0.0, 0.0))
    real, calls = scoring.score_images, []

    def flaky(items, setup, threads=4):
        calls.append(1)
        if len(calls) < 3:
            raise scoring.ScoringInputError(f"{items[0].path}: cannot be read: EIO")
        return real(items, setup, threads)

    monkeypatch.setattr(scoring, "score_images", flaky)
    (result,) = scoring.compute_scores([item], setup.identity)
    assert len(calls) == 3 and result.sha256 == item.sha256

    calls.clear()
    monkeypatch.setattr(scoring, "score_images", lambda *a, **k: calls.append(1) or (
        _ for _ in ()).throw(scoring.ScoringInputError("still EIO")))
    with pytest.raises(scoring.ScoringInputError):
        scoring.compute_scores([item], setup.identity)
    assert len(calls) == 3  # the first try and two more

    calls.clear()
    changed = scoring.ContentChanged(f"{photos[0]}: content changed since intake")
    monkeypatch.setattr(scoring, "score_images", lambda *a, **k: calls.append(1) or (
        _ for _ in ()).throw(changed))
    with pytest.raises(scoring.ContentChanged):
        scoring.compute_scores([item], setup.identity)
    assert len(calls) == 1
