"""The MuseTalk seed's streaming API with its own paths and bodies: avatar create and list,
inference start (an uploaded or server-side audio file, or text) -> an MJPEG stream -> stop,
and the bad inputs, each a 4xx that leaves no session behind."""
from __future__ import annotations

import asyncio
import io
import uuid
import wave
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from serve_app.config import PROJECT_ROOT
from tests.integration.support import admin, png

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SOURCES = Path("/tmp/dh-test-avatar-sources")  # tests/fixtures/degraded.yaml's avatars.source_dirs


def question_wav() -> bytes:
    return (FIXTURES / "weather_question.wav").read_bytes()


async def active_sessions(http) -> int:
    return (await http.get("/api/health")).json()["sessions"]


class MjpegReader:
    """Reads the JPEGs of a multipart/x-mixed-replace body, as many at a time as asked."""

    def __init__(self, response) -> None:
        self._chunks = response.aiter_bytes()
        self._buffer = b""

    def _next_part(self) -> bytes | None:
        head = self._buffer.find(b"\r\n\r\n")
        if head < 0:
            return None
        assert self._buffer.startswith(b"--frame\r\n"), self._buffer[:40]
        headers = dict(line.split(": ", 1) for line in self._buffer[9:head].decode().split("\r\n"))
        size = int(headers["Content-Length"])
        if len(self._buffer) < head + 4 + size + 2:
            return None
        assert headers["Content-Type"] == "image/jpeg"
        jpeg = self._buffer[head + 4:head + 4 + size]
        self._buffer = self._buffer[head + 4 + size + 2:]
        return jpeg

    async def frames(self, n: int) -> list[bytes]:
        """The next `n` frames, or fewer if the stream ends first."""
        out = []
        while len(out) < n:
            part = self._next_part()
            if part is not None:
                out.append(part)
                continue
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                break
        return out


async def read_mjpeg(response, frames: int) -> list[bytes]:
    return await MjpegReader(response).frames(frames)


async def test_inference_streams_mjpeg_with_speech_then_stop_ends_it(http):
    before = await active_sessions(http)
    started = await http.post("/api/inference/start", data={"avatar_id": "default", "fps": "25"},
                              files={"audio": ("question.wav", question_wav(), "audio/wav")})
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["status"] == "success" and body["message"] and body["stream_url"] == f"/api/stream/{body['session_id']}"
    async with http.stream("GET", body["stream_url"]) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        reader = MjpegReader(stream)
        frames = await asyncio.wait_for(reader.frames(60), 60)  # 2.4 s: the 1.6 s question and idle
        assert len(frames) == 60 and all(f[:2] == b"\xff\xd8" for f in frames)  # JPEG each
        assert len(set(frames)) > 20  # the face moves
        info = await http.get(f"/api/sessions/{body['session_id']}", headers={"Authorization": f"Bearer {body['token']}"})
        assert info.json()["speech_frames"] > 25  # the audio was lip-synced and shown
        stopped = await http.post(f"/api/inference/stop/{body['session_id']}")
        assert stopped.status_code == 200 and stopped.json()["status"] == "success"
        rest = await asyncio.wait_for(reader.frames(10_000), 30)  # the stream ends with the session
        assert len(rest) < 10_000
    assert (await http.get(body["stream_url"])).status_code == 404
    assert (await http.post(f"/api/inference/stop/{body['session_id']}")).status_code == 404

    async def back() -> None:
        while await active_sessions(http) != before:
            await asyncio.sleep(0.2)  # polling the server, not timing the test
    await asyncio.wait_for(back(), 20)


async def test_inference_from_text_and_the_token_protected_mjpeg_of_any_session(http):
    started = (await http.post("/api/inference/start", json={"avatar_id": "default", "text": "Hello from the seed API."})).json()
    auth = {"Authorization": f"Bearer {started['token']}"}
    try:
        async with http.stream("GET", f"/api/sessions/{started['session_id']}/mjpeg?fps=5", headers=auth) as stream:
            assert stream.status_code == 200
            assert len(await asyncio.wait_for(read_mjpeg(stream, 5), 30)) == 5
        assert (await http.get(f"/api/sessions/{started['session_id']}/mjpeg")).status_code == 403
        assert (await http.get(f"/api/sessions/{started['session_id']}/mjpeg?fps=7", headers=auth)).status_code == 400
    finally:
        await http.post(f"/api/inference/stop/{started['session_id']}")
    created = (await http.post("/api/sessions", json={})).json()  # a normal session: no token-free stream
    try:
        assert (await http.get(f"/api/stream/{created['session_id']}")).status_code == 403
        assert (await http.post(f"/api/inference/stop/{created['session_id']}")).status_code == 403
    finally:
        await http.delete(f"/api/sessions/{created['session_id']}", headers={"Authorization": f"Bearer {created['token']}"})


@pytest.mark.parametrize("request_kwargs, status, says", [
    ({"json": {"avatar_id": "nobody", "text": "hi"}}, 404, "unknown avatar"),
    ({"json": {"avatar_id": "default"}}, 422, "exactly one"),
    ({"json": {"avatar_id": "default", "text": "hi", "audio_path": "/tmp/x.wav"}}, 422, "exactly one"),
    ({"json": {"avatar_id": "default", "text": "hi", "fps": 7}}, 422, "fps"),
    ({"json": {"avatar_id": "default", "audio_path": "/etc/passwd"}}, 403, "source_dirs"),
    ({"json": {"fps": 25}}, 422, "avatar_id"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ({"data": {"avatar_id": "default"}, "files": {"audio": ("a.png", png(skdata.astronaut()), "image/png")}}, 422, "audio"),
    ({"data": {"avatar_id": "default"}, "files": {"audio": ("a.wav", b"RIFF....WAVEjunk", "audio/wav")}}, 422, "audio"),
    ({"data": {"avatar_id": "default"}, "files": {"audio": ("a.wav", b"", "audio/wav")}}, 422, "empty"),
])
async def test_bad_inference_requests_are_4xx_and_leave_nothing(http, request_kwargs, status, says):
    before = await active_sessions(http)
    response = await http.post("/api/inference/start", **request_kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert says.lower() in detail.lower()
    assert str(PROJECT_ROOT) not in detail  # no server path (the avatars folder) in an error
    assert await active_sessions(http) == before


async def test_a_path_outside_the_allowed_folders_is_refused_without_naming_them(http, degraded_url):
    base = degraded_url.removeprefix(str(http.base_url).rstrip("/"))
    response = await http.post(f"{base}/api/inference/start", json={"avatar_id": "default", "audio_path": "/etc/passwd"})
    assert response.status_code == 403 and "source_dirs" in response.json()["detail"]
    assert str(SOURCES) not in response.text


async def test_avatar_create_and_list_from_a_server_side_video(http, degraded_url):
    base = degraded_url.removeprefix(str(http.base_url).rstrip("/"))
    SOURCES.mkdir(exist_ok=True)
    photo = SOURCES / "seed-astronaut.png"
    photo.write_bytes(png(skdata.astronaut()))
    avatar_id = f"seed-{uuid.uuid4().hex[:6]}"
    body = {"avatar_id": avatar_id, "video_path": str(photo), "bbox_shift": 0, "batch_size": 4}
    assert (await http.post(f"{base}/api/avatar/create", json=body)).status_code == 403  # admin token
    made = await http.post(f"{base}/api/avatar/create", json=body, headers=admin(), timeout=300)
    try:
        assert made.status_code == 200, made.text
        assert made.json() == {"status": "success", "message": f"avatar {avatar_id} is ready", "avatar_id": avatar_id}
        listed = {a["avatar_id"]: a for a in (await http.get(f"{base}/api/avatar/list")).json()["avatars"]}
        assert listed[avatar_id]["status"] == "ready" and listed[avatar_id]["created_at"].endswith("Z")
        assert "default" in listed
        again = await http.post(f"{base}/api/avatar/create", json=body, headers=admin())
        assert again.status_code == 409
        outside = await http.post(f"{base}/api/avatar/create", json={**body, "avatar_id": "seed-x",
                                                                     "video_path": "/etc/hostname"}, headers=admin())
        missing = await http.post(f"{base}/api/avatar/create", json={**body, "avatar_id": "seed-x",
                                                                     "video_path": str(SOURCES / "none.mp4")}, headers=admin())
        assert (outside.status_code, missing.status_code) == (403, 404)
        assert "seed-x" not in {a["avatar_id"] for a in (await http.get(f"{base}/api/avatar/list")).json()["avatars"]}
    finally:
        await http.delete(f"{base}/api/avatars/{avatar_id}", headers=admin())


async def test_audio_paths_and_length_limits_on_a_profile_that_allows_paths(http, degraded_url):
    base = degraded_url.removeprefix(str(http.base_url).rstrip("/"))
    SOURCES.mkdir(exist_ok=True)
    long_wav = SOURCES / "seed-long.wav"
    with wave.open(str(long_wav), "wb") as out:  # over degraded.yaml's sessions.max_audio_s (2 s)
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(np.zeros(16000 * 3, np.int16).tobytes())
    (SOURCES / "seed-notes.txt").write_text("not audio")

    async def start(path: str):
        return await http.post(f"{base}/api/inference/start", json={"avatar_id": "default", "audio_path": path})

    too_long = await start(str(long_wav))
    assert too_long.status_code == 422 and "longer than the 2 s limit" in too_long.json()["detail"]
    assert (await start(str(SOURCES / "seed-missing.wav"))).status_code == 404
    assert (await start(str(SOURCES / "seed-notes.txt"))).status_code == 415
    assert (await start(str(SOURCES / ".." / "etc" / "x.wav"))).status_code == 403
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(np.zeros(16000, np.int16).tobytes())
    (SOURCES / "seed-short.wav").write_bytes(buffer.getvalue())
    ok = await start(str(SOURCES / "seed-short.wav"))
    assert ok.status_code == 200, ok.text
    await http.post(f"{base}/api/inference/stop/{ok.json()['session_id']}")
