"""Stage 5 with real models: tiny open_clip + LAION head + BRISQUE parameters built
here, saved to files and loaded back through the configured paths, on real JPEGs."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import pytest
from prefect import flow

pytest.importorskip("torch")
from galleryflow.torch_compat import ensure_torchvision  # noqa: E402

ensure_torchvision()  # before anything imports torchvision (open_clip, pyiqa)
pytest.importorskip("open_clip")
pytest.importorskip("pyiqa")

import torch  # noqa: E402

from galleryflow.scoring import models as sm  # noqa: E402
from galleryflow.core.fsutil import sha256_file  # noqa: E402
from galleryflow.imaging.decode import open_reduced  # noqa: E402
from galleryflow.imaging.stats import fallback_aesthetic, fallback_brisque, image_stats  # noqa: E402
from galleryflow.core.settings import get_settings  # noqa: E402
from galleryflow.core.stages import ChunkReport  # noqa: E402
from tasks.scoring import ScoreInput, score_images, scoring_setup  # noqa: E402
from flows.fanout import score_rows  # noqa: E402
from tests.fixtures.photos import make_set, write_odd_images  # noqa: E402
from tests.fixtures.rows import by_name, insert_set, load_photos  # noqa: E402
from tests.fixtures.weights import (  # noqa: E402
    TINY_MODEL,
    configure_scoring,
    isolate_weight_caches,
    tiny_weights,
    write_brisque_params,
    write_head,
)

pytestmark = pytest.mark.ai


@pytest.fixture(autouse=True)
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    isolate_weight_caches(monkeypatch, tmp_path)
    return tiny_weights(tmp_path / "weights", monkeypatch)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    folder = make_set(tmp_path / "sets", f"ridge-{uuid.uuid4().hex[:8]}", 3, size=(640, 480))
    return sorted(folder.glob("*.jpg"))


def _inputs(paths: list[Path]) -> list[ScoreInput]:
    return [ScoreInput(sha256=sha256_file(p), path=p) for p in paths]


def _reference_aesthetic(settings, path: Path) -> float:
    """The same computation done by hand with open_clip and the head file."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_MODEL, pretrained=str(settings.scoring.clip_checkpoint))
    head = sm.AestheticMLP(32)
    head.load_state_dict(torch.load(settings.scoring.aesthetic_head, weights_only=True))
    model.eval(), head.eval()
    image = open_reduced(path, settings.scoring.analysis_long_edge)
    with torch.inference_mode():
        embedding = model.encode_image(preprocess(image).unsqueeze(0))
        embedding = embedding / embedding.norm(dim=-1, keepdim=True)
        return float(head(embedding)[0, 0])


def _reference_brisque(settings, path: Path) -> float:
    from pyiqa.archs.brisque_arch import brisque

    sv_coef, sv = torch.load(settings.scoring.brisque_params, weights_only=True)
    image = open_reduced(path, settings.scoring.analysis_long_edge)
    import numpy as np

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    return float(brisque(pixels, sv_coef=sv_coef, sv=sv))


def test_models_score_real_jpegs_through_the_configured_files(weights, photos):
    setup = scoring_setup(weights)
    assert setup.clip.found_via == "setting" and setup.head.found_via == "setting"
    results = score_images(_inputs(photos), setup)
    clip_fp = sha256_file(weights.scoring.clip_checkpoint)[:12]
    head_fp = sha256_file(weights.scoring.aesthetic_head)[:12]
    params_fp = sha256_file(weights.scoring.brisque_params)[:12]
    for path, result in zip(photos, results, strict=True):
        assert result.clip_aesthetic_source.startswith("open_clip-")
        assert f"{TINY_MODEL} sha256:{clip_fp}" in result.clip_aesthetic_source
        assert f"laion-aesthetic-mlp sha256:{head_fp}" in result.clip_aesthetic_source
        assert result.brisque_source.startswith("pyiqa-0.1.")
        assert result.brisque_source.endswith(f"brisque params sha256:{params_fp}")
        assert result.clip_aesthetic_score == pytest.approx(
            _reference_aesthetic(weights, path), abs=1e-3)
        assert result.brisque_score == pytest.approx(_reference_brisque(weights, path), abs=1e-3)
        assert result.reasons == []
    # Random weights still tell images apart: the model really ran per image. (Compared
    # unrounded: stored scores keep 4 decimals, and a tiny random head can put two
    # images within 1e-4 of each other.)
    assert len({_reference_aesthetic(weights, p) for p in photos}) == len(photos)


def test_batches_give_the_same_scores_as_single_images(weights, photos, monkeypatch):
    batched = score_images(_inputs(photos), scoring_setup(weights))
    single_settings = configure_scoring(monkeypatch, batch_size=1)
    single = score_images(_inputs(photos), scoring_setup(single_settings))
    for a, b in zip(batched, single, strict=True):
        assert a.clip_aesthetic_score == pytest.approx(b.clip_aesthetic_score, abs=1e-3)
        assert a.brisque_score == b.brisque_score


def test_models_are_loaded_once_per_process(weights, photos):
    setup = scoring_setup(weights)
    first = sm.aesthetic_model(setup)
    score_images(_inputs(photos[:1]), setup)
    score_images(_inputs(photos[1:]), scoring_setup(weights))
    assert sm.aesthetic_model(scoring_setup(weights)) is first
    assert sm.brisque_model(setup) is sm.brisque_model(scoring_setup(weights))


def test_odd_files_take_the_fallback_even_with_models(weights, photos, tmp_path):
    expected = write_odd_images(tmp_path / "odd", photos[0])
    files = [photos[0]] + [tmp_path / "odd" / name for name in expected]
    results = score_images(_inputs(files), scoring_setup(weights))
    assert results[0].brisque_source.startswith("pyiqa-")
    for path, result in zip(files[1:], results[1:], strict=True):
        fragment = expected[path.name]
        assert result.brisque_source.startswith("fallback: ") and fragment in result.brisque_source
        assert fragment in result.clip_aesthetic_source
        if fragment != "cannot decode":
            stats = image_stats(open_reduced(path, weights.scoring.analysis_long_edge))
            assert result.brisque_score == fallback_brisque(stats)
            assert result.clip_aesthetic_score == fallback_aesthetic(stats)


def test_identity_follows_weight_content_not_paths(weights, tmp_path, monkeypatch):
    before = scoring_setup(weights).identity
    moved = tmp_path / "moved" / "head.pth"
    moved.parent.mkdir()
    moved.write_bytes(Path(weights.scoring.aesthetic_head).read_bytes())
    same = scoring_setup(configure_scoring(monkeypatch, aesthetic_head=moved)).identity
    assert same == before
    retrained = write_head(tmp_path / "moved" / "head-2.pth", seed=7)
    changed = scoring_setup(configure_scoring(monkeypatch, aesthetic_head=retrained)).identity
    assert changed != before and changed.head_sha256 != before.head_sha256
    assert changed.clip_sha256 == before.clip_sha256


def test_brisque_params_file_is_really_used(weights, photos, tmp_path, monkeypatch):
    a = score_images(_inputs(photos[:1]), scoring_setup(weights))[0].brisque_score
    other = write_brisque_params(tmp_path / "other-brisque.pth", seed=3)
    b = score_images(_inputs(photos[:1]),
                     scoring_setup(configure_scoring(monkeypatch, brisque_params=other)))[0]
    assert b.brisque_score != a
    assert b.brisque_score == pytest.approx(_reference_brisque(get_settings(), photos[0]), abs=1e-3)


class _Payload:
    def __reduce__(self):  # what a malicious "weights" pickle would carry
        return (print, ("this must never run",))


def test_unsafe_or_malformed_weights_fall_back_with_the_reason(weights, photos, tmp_path,
                                                              monkeypatch, capsys):
    unsafe = tmp_path / "unsafe.pth"
    unsafe.write_bytes(pickle.dumps((_Payload(), _Payload())))
    broken_ckpt = tmp_path / "broken.pt"
    broken_ckpt.write_bytes(b"not a checkpoint")
    wrong_head = write_head(tmp_path / "head-768.pth", input_size=768)  # ViT-L-14's size
    settings = configure_scoring(monkeypatch, brisque_params=unsafe, aesthetic_head=wrong_head)
    result = score_images(_inputs(photos[:1]), scoring_setup(settings))[0]
    assert "this must never run" not in capsys.readouterr().out
    assert result.brisque_source.startswith(f"fallback: BRISQUE parameter file {unsafe}")
    assert result.clip_aesthetic_source == (
        "fallback: the aesthetic head takes 768-d embeddings but gf-tiny-vit gives 32-d")
    stats = image_stats(open_reduced(photos[0], settings.scoring.analysis_long_edge))
    assert result.brisque_score == fallback_brisque(stats)

    settings = configure_scoring(monkeypatch, clip_checkpoint=broken_ckpt)
    result = score_images(_inputs(photos[:1]), scoring_setup(settings))[0]
    assert result.clip_aesthetic_source.startswith(
        f"fallback: open_clip could not load {TINY_MODEL} from {broken_ckpt}")
    assert result.clip_aesthetic_score == fallback_aesthetic(stats)


def test_weights_found_in_the_cache_dir(weights, photos, monkeypatch):
    cache = Path(get_settings().scoring.cache_dir)
    (cache / "brisque_svm_weights.pth").write_bytes(
        Path(weights.scoring.brisque_params).read_bytes())
    monkeypatch.delenv("GALLERYFLOW_SCORING__BRISQUE_PARAMS")
    settings = configure_scoring(monkeypatch)
    setup = scoring_setup(settings)
    assert setup.brisque.found_via == "cache"
    result = score_images(_inputs(photos[:1]), setup)[0]
    assert result.brisque_source.startswith("pyiqa-")


@flow(name="scoring-ai-under-test")
def scoring_flow(row_ids: list[int], image_set_id: int) -> list[ChunkReport]:
    return score_rows(row_ids, image_set_id, chunk_size=2)


@pytest.mark.integration
def test_model_scores_land_in_the_db(prefect_api, db, weights, photos, tmp_path):
    expected = write_odd_images(tmp_path / "odd", photos[0])
    files = photos + [tmp_path / "odd" / "palette.png"]
    inserted = insert_set(weights, files=files, status="new", exif=False)
    image_set_id, row_ids = inserted.image_set_id, inserted.row_ids
    reports = scoring_flow(row_ids, image_set_id)
    rows = by_name(load_photos(row_ids))
    direct = {r.sha256: r for r in score_images(_inputs(files), scoring_setup(weights))}
    for path in photos:
        row = rows[path.name]
        assert row.status == "scored"
        assert row.clip_aesthetic_source.startswith("open_clip-") and TINY_MODEL in row.clip_aesthetic_source
        assert row.brisque_source.startswith("pyiqa-")
        assert row.clip_aesthetic_score == pytest.approx(direct[row.sha256].clip_aesthetic_score)
        assert row.brisque_score == pytest.approx(direct[row.sha256].brisque_score)
    palette = rows["palette.png"]
    assert palette.status == "scored"
    assert palette.brisque_source.startswith("fallback: palette image")
    assert expected["palette.png"] in palette.clip_aesthetic_source
    outcomes = {o.file: o.outcome for report in reports for o in report.outcomes}
    assert outcomes == {**{p.name: "ok" for p in photos}, "palette.png": "warning"}


def test_zero_shot_hints_rank_labels_by_similarity() -> None:
    from galleryflow.scoring.models import zero_shot

    unit = torch.nn.functional.normalize
    images = unit(torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.2]]), dim=-1)
    texts = unit(torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    hints = zero_shot(images, texts, ("lake", "boat", "sky"), top_k=2, min_score=0.5)
    assert [label for label, _ in hints[0]] == ["lake"]  # "boat" is below the threshold
    assert [label for label, _ in hints[1]] == ["boat"]
    assert 0.5 <= hints[0][0][1] <= 1.0


def test_hints_come_from_the_aesthetic_embedding_or_are_absent(weights, photos) -> None:
    setup = scoring_setup(weights)
    assert "harbour" in setup.identity.hint_labels  # the shipped vocabulary, in the cache key
    results = score_images(_inputs(photos[:1]), setup)
    # The tiny test model's text tower has a 1000-token vocabulary: CLIP's tokenizer
    # cannot feed it, so there are no hints, and the aesthetic score is unaffected.
    assert results[0].visual_hints is None
    assert results[0].clip_aesthetic_source.startswith("open_clip-")
    assert sm.aesthetic_model(setup).label_embeddings(setup.identity.hint_labels) is None
