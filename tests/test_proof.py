"""The proof rows and the two artifacts, from a flow that makes the calls the real one makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from galleryflow.core.settings import Settings
from tasks.captioning import caption_chunk, start_captioning
from galleryflow.core.stages import chunked
from tasks.model_resize import model_resize_chunk
from tasks.proof import ProofSummary, artifact_key, publish_proof_artifacts
from tests.fixtures.ollama import point_at
from tests.fixtures.rows import insert_set, load_photos
from tests.services.ollama_stub import Good, OllamaStub

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


@flow(name="stages-6-7-under-test")
def stages_6_7(row_ids: list[int], image_set_id: int, chunk_size: int) -> ProofSummary:
    """Stages 6–7 the way process-sets runs them (see docs/captioning.md)."""
    resized = [model_resize_chunk.submit(chunk, image_set_id) for chunk in chunked(row_ids, 64)]
    plan = start_captioning(image_set_id)
    drafted = [caption_chunk.submit(chunk, image_set_id, plan, wait_for=resized)
               for chunk in chunked(row_ids, chunk_size)]
    for future in drafted:
        future.result()
    return publish_proof_artifacts(image_set_id)


def _latest(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC, limit=1,
        )
    assert found, f"no artifact {key}"
    return found[0]


def test_proof_and_artifacts(gf_home: Settings, stub: OllamaStub, tmp_path: Path) -> None:
    point_at(gf_home, stub)
    inserted = insert_set(gf_home, tmp_path, "proof-set", 4, location="Lake Thun")
    same = "Rolling hills near Lake Thun beneath a pale sky, caught in clear morning light."

    def answer(call):  # by photo, since the two chunks may reach the model in either order
        stamp = call.evidence["date_taken"]
        if stamp.endswith("09:00"):
            return Good(keywords=["hills", "eagle", "lake thun", "morning"])  # one to drop
        if stamp.endswith(("09:30", "10:00")):
            return Good(caption=same)  # the second of these two is a duplicate, every time
        return Good()

    stub.default = answer
    summary = stages_6_7(inserted.row_ids, inserted.image_set_id, chunk_size=2)

    assert summary.rows == 4 and summary.passed == 3 and summary.blocked == 1
    done = load_photos(inserted.row_ids)
    (blocked,) = [r for r in done if not r.proof.passed]
    assert blocked.original_name in ("proof-set-02.jpg", "proof-set-03.jpg")
    assert blocked.proof.field_states["caption"] == "blocked"
    assert blocked.proof.repair_attempts == 2
    assert summary.blocked_rows[0]["file"] == blocked.original_name
    assert "in common with another photo's caption" in summary.blocked_rows[0]["reasons"]
    assert "keyword_without_evidence" in summary.suspicious
    assert any("proof-set-02.jpg and proof-set-03.jpg" in d for d in summary.duplicates)
    assert stub.max_in_flight == 1  # the `ollama` limit (1 slot) held across both chunks

    qc = _latest(artifact_key("prefill-qc", "proof-set"))
    assert qc.type == "markdown"
    assert "## Duplicates" in qc.data and blocked.original_name in qc.data
    assert "keyword_without_evidence" in qc.data and "## Blocked rows" in qc.data
    table = _latest(artifact_key("metadata-proof", "proof-set"))
    assert table.type == "table"
    assert blocked.original_name in str(table.data) and "blocked" in str(table.data)
    assert "1 blocked" in table.description
