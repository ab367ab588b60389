"""The review page's access rule, through the ASGI app, and what it serves.

Loopback only without a token; with a token, every request must present it (compared
in constant time); a refused request gets 401 and not a byte of a photo or a caption.
Photos come only from the paths the DB holds for a row, re-encoded without metadata.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from pydantic import SecretStr
from starlette.testclient import TestClient

from galleryflow.app.review_web import COOKIE, ReviewPageError, ReviewServer, create_app, is_loopback
from galleryflow.core.settings import Settings
from tests.fixtures.rows import RowSpec, drafted, insert_set

TOKEN = "s3cret-review-token"
OUTSIDE = ("203.0.113.7", 52000)  # a reviewer on another machine (TEST-NET-3)
LOCAL = ("127.0.0.1", 52000)


@pytest.fixture
def photo_row(db: str, gf_home: Settings, tmp_path: Path) -> int:
    """A drafted row whose incoming copy carries EXIF with a GPS position."""
    inserted = insert_set(gf_home, tmp_path / "sets", "lake-shore", size=(1600, 1000),
                          per_row=drafted([RowSpec(status="awaiting_review")]))
    return inserted.row_ids[0]


def _client(settings: Settings, token: str | None, client: tuple[str, int],
            base_url: str = "http://127.0.0.1:8765") -> TestClient:
    return TestClient(create_app(settings, token), base_url=base_url, client=client,
                      follow_redirects=False)


def _no_photo_or_caption(response, caption: str = "Morning light") -> None:
    assert response.status_code == 401
    assert b"\xff\xd8" not in response.content  # no JPEG
    assert caption.encode() not in response.content


def test_without_a_token_only_loopback_clients_are_served(gf_home: Settings, photo_row: int) -> None:
    outside = _client(gf_home, None, OUTSIDE, base_url="http://192.0.2.10:8765")
    _no_photo_or_caption(outside.get(f"/photo/{photo_row}"))
    _no_photo_or_caption(outside.get("/"))
    _no_photo_or_caption(outside.post("/api/gate/x/check", json={"row_id": photo_row}))

    local = _client(gf_home, None, LOCAL)
    response = local.get(f"/photo/{photo_row}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    # A page elsewhere reaching 127.0.0.1 under its own name (DNS rebinding) gets nothing.
    rebound = _client(gf_home, None, LOCAL, base_url="http://evil.example.org:8765")
    _no_photo_or_caption(rebound.get(f"/photo/{photo_row}"))


def test_with_a_token_every_request_must_present_it(gf_home: Settings, photo_row: int) -> None:
    outside = _client(gf_home, TOKEN, OUTSIDE, base_url="http://review.example.org")
    _no_photo_or_caption(outside.get(f"/photo/{photo_row}"))
    _no_photo_or_caption(outside.get(f"/photo/{photo_row}", headers={"Authorization": "Bearer nope"}))
    _no_photo_or_caption(outside.get(f"/photo/{photo_row}?token=s3cret"))
    # Loopback is no way around it: a proxy on this machine is loopback too.
    _no_photo_or_caption(_client(gf_home, TOKEN, LOCAL).get(f"/photo/{photo_row}"))

    ok = outside.get(f"/photo/{photo_row}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.content.startswith(b"\xff\xd8")

    # The printed link: ?token= once, then a cookie (HttpOnly, SameSite=Strict).
    first = outside.get(f"/gate/abc?token={TOKEN}")
    assert first.status_code == 303 and first.headers["location"] == "/gate/abc"
    cookie = first.headers["set-cookie"]
    assert f"{COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert outside.get(f"/photo/{photo_row}", cookies={COOKIE: TOKEN}).status_code == 200


def test_posts_must_be_json_from_the_page_itself(gf_home: Settings, photo_row: int) -> None:
    local = _client(gf_home, None, LOCAL)
    assert local.post("/api/gate/x/submit", data={"rows": "[]"}).status_code == 403
    refused = local.post("/api/gate/x/submit", json={},
                         headers={"Origin": "http://evil.example.org"})
    assert refused.status_code == 403


def test_the_token_page_works_with_the_token(gf_home: Settings, photo_row: int,
                                             prefect_api: None) -> None:
    outside = _client(gf_home, TOKEN, OUTSIDE, base_url="http://review.example.org")
    page = outside.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and "No review gate is open" in page.text
    missing = outside.get("/gate/00000000-0000-0000-0000-000000000000",
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 404 and "has no open review gate" in missing.text


def test_photos_are_served_from_the_db_paths_without_metadata(gf_home: Settings,
                                                              photo_row: int) -> None:
    local = _client(gf_home, None, LOCAL)
    page = Image.open(io.BytesIO(local.get(f"/photo/{photo_row}").content))
    large = Image.open(io.BytesIO(local.get(f"/photo/{photo_row}?size=large").content))
    thumb = Image.open(io.BytesIO(local.get(f"/photo/{photo_row}?size=thumb").content))
    assert max(page.size) == 1024 and max(large.size) == 1600 and max(thumb.size) == 160
    for image in (page, large, thumb):
        assert not image.getexif() and "icc_profile" not in image.info and "exif" not in image.info
    assert local.get("/photo/999999").status_code == 404
    assert local.get("/photo/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert local.get(f"/photo/{photo_row}?size=../../x").status_code == 400


def test_a_public_bind_needs_a_token(gf_home: Settings) -> None:
    with pytest.raises(ReviewPageError, match="without a token"):
        ReviewServer(gf_home, host="0.0.0.0", port=8765)
    review = gf_home.review.model_copy(update={"web_token": SecretStr(TOKEN)})
    server = ReviewServer(gf_home.model_copy(update={"review": review}), host="0.0.0.0", port=8765)
    assert server.url("/gate/r1") == f"http://127.0.0.1:8765/gate/r1?token={TOKEN}"
    assert ReviewServer(gf_home).url() == "http://127.0.0.1:8765/"
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback(None)


def test_the_token_can_live_in_a_secret_block(gf_home: Settings, prefect_api: None) -> None:
    from prefect.blocks.system import Secret

    from galleryflow.app.review_web import resolve_token

    Secret(value=TOKEN).save("review-token", overwrite=True)
    review = gf_home.review.model_copy(update={"web_token_block": "review-token"})
    assert resolve_token(gf_home.model_copy(update={"review": review})) == TOKEN
    assert resolve_token(gf_home) is None
    missing = gf_home.review.model_copy(update={"web_token_block": "no-such-block"})
    with pytest.raises(ReviewPageError, match="no Secret block"):
        resolve_token(gf_home.model_copy(update={"review": missing}))


def test_edits_are_checked_on_the_page_with_the_gates_own_checks(gf_home: Settings,
                                                                   photo_row: int) -> None:
    local = _client(gf_home, None, LOCAL)
    unchanged = local.post("/api/gate/x/check", json={
        "row_id": photo_row, "caption": "Morning light on the lake shore, frame 1. Mist over the water.",
        "alt_text": "A calm lake below green hills in soft morning light (frame 1)",
        "keywords": "lake, morning, hills, frame-1", "subject": "Lake shore at dawn",
        "web_file_name": "lake-shore-dawn-01"})
    assert unchanged.json() == {"row_id": photo_row, "errors": [], "warnings": []}
    refused = local.post("/api/gate/x/check", json={
        "row_id": photo_row, "caption": "This image shows a lake visit http://spam.example.com",
        "alt_text": "A calm lake below green hills in soft morning light (frame 1)",
        "keywords": "lake, morning, hills, frame-1", "subject": "Lake shore at dawn",
        "web_file_name": "lake-shore-dawn-01"})
    errors = refused.json()["errors"]
    assert errors and all(e.startswith("caption: ") for e in errors)
    assert local.post("/api/gate/x/check", json={"row_id": "x"}).status_code == 400
