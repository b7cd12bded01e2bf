"""Bad input gets a clear error with the right status, and disturbs no other session."""
from __future__ import annotations

import pytest

from serve_app.client import ApiError, AvatarSession
from tests.integration.support import assert_still_streams_and_speaks

pytestmark = pytest.mark.integration

UNKNOWN = "0" * 32
SESSION_ENDPOINTS = [
    ("POST", "/say", {"text": "hi"}),
    ("POST", "/offer", {"sdp": "v=0", "type": "offer"}),
    ("POST", "/interrupt", None),
    ("GET", "", None),
    ("DELETE", "", None),
]


@pytest.fixture
async def fresh(app_url):
    session = AvatarSession(app_url)
    await session.create()
    yield session
    await session.close()


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


async def test_malformed_authorization_header_is_403(http, bystander, fresh):
    for header in ("Bearer", "Basic dXNlcjpwYXNz", fresh.token):
        response = await http.get(f"/api/sessions/{fresh.session_id}", headers={"Authorization": header})
        assert response.status_code == 403, header


@pytest.mark.parametrize("method, suffix, body", SESSION_ENDPOINTS)
async def test_unknown_session_is_404(http, bystander, method, suffix, body):
    for session_id in (UNKNOWN, "not-a-session"):
        response = await http.request(
            method, f"/api/sessions/{session_id}{suffix}", json=body, headers=bearer("whatever")
        )
        assert response.status_code == 404, response.text
        assert "not found" in response.json()["detail"]


@pytest.mark.parametrize("method, suffix, body", SESSION_ENDPOINTS)
async def test_missing_or_wrong_token_is_403(http, bystander, fresh, method, suffix, body):
    for token in (None, "wrong-token", bystander.token):
        response = await http.request(
            method, f"/api/sessions/{fresh.session_id}{suffix}", json=body, headers=bearer(token)
        )
        assert response.status_code == 403, (token, response.text)
        assert "token" in response.json()["detail"]
    # The session is untouched and still answers its own token.
    assert (await http.get(f"/api/sessions/{fresh.session_id}", headers=bearer(fresh.token))).status_code == 200


async def test_malformed_sdp_is_400_and_session_survives(http, bystander, fresh):
    path = f"/api/sessions/{fresh.session_id}/offer"
    for sdp in ("this is not sdp", "v=0\r\nm=video oops\r\n"):
        response = await http.post(path, json={"sdp": sdp, "type": "offer"}, headers=bearer(fresh.token))
        assert response.status_code == 400, response.text
        assert "SDP" in response.json()["detail"]
    wrong_type = await http.post(path, json={"sdp": "v=0", "type": "answer"}, headers=bearer(fresh.token))
    assert wrong_type.status_code == 422
    # A good offer afterwards still connects: the failed ones left nothing half-made.
    await fresh.connect()
    await fresh.wait_event(lambda e: e["type"] == "ready")


async def test_text_must_be_1_to_2000_characters(http, bystander, fresh):
    path = f"/api/sessions/{fresh.session_id}/say"
    for text, status in (("", 422), ("   \n", 422), ("x" * 2001, 422), ("Short and fine.", 202)):
        response = await http.post(path, json={"text": text}, headers=bearer(fresh.token))
        assert response.status_code == status, (len(text), response.text)
        if status == 422:
            assert response.json()["detail"]
    missing = await http.post(path, json={}, headers=bearer(fresh.token))
    assert missing.status_code == 422


async def test_unknown_or_unsafe_avatar_and_character_are_422(http, bystander):
    before = (await http.get("/api/health")).json()["sessions"]
    for body, word in (
        ({"avatar": "nobody"}, "nobody"),
        ({"avatar": "../etc"}, "avatar id"),
        ({"avatar": "a.b"}, "avatar id"),
        ({"character": "ghost"}, "ghost"),
    ):
        response = await http.post("/api/sessions", json=body)
        assert response.status_code == 422, response.text
        assert word in str(response.json()["detail"])
        assert "/avatars" not in response.text and "/tmp" not in response.text  # no server path
    assert (await http.get("/api/health")).json()["sessions"] == before


async def test_session_cap_answers_503_with_retry_after(app_url, http, bystander):
    health = (await http.get("/api/health")).json()
    extra = []
    try:
        for _ in range(health["max_sessions"] - health["sessions"]):
            session = AvatarSession(app_url)
            await session.create()
            extra.append(session)
        with pytest.raises(ApiError) as refused:
            await AvatarSession(app_url).create()
        assert refused.value.status == 503
        assert int(refused.value.headers["Retry-After"]) > 0
        assert "retry" in refused.value.detail
        await extra.pop().close()  # a freed slot can be used again
        again = AvatarSession(app_url)
        await again.create()
        extra.append(again)
    finally:
        for session in extra:
            await session.close()


async def test_bystander_kept_streaming_and_still_speaks(bystander):
    """Runs last in this module: everything above happened while this session streamed."""
    await assert_still_streams_and_speaks(bystander, "Still here.")
    assert not [e for e in bystander.received.events if e["type"] == "error"]
