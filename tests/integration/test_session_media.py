"""A real aiortc client over loopback against the real app on a local Ray cluster."""
from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import ray

from serve_app.client import AvatarSession
from serve_app.config import PROJECT_ROOT, SESSION_NAMESPACE
from serve_app.engines.lipsync.sprite import SpriteAvatar

pytestmark = pytest.mark.integration

SPEECH_RMS = 300.0  # int16 scale; Opus-decoded silence is ~0, Piper speech is in the thousands
SILENCE_RMS = 30.0


def mouth_box() -> tuple[int, int, int, int]:
    avatar = SpriteAvatar(PROJECT_ROOT / "avatars" / "default")
    boxes = np.array([avatar.mouth_box(i) for i in range(0, 250, 5)])
    return tuple(int(v) for v in (*boxes[:, :2].min(0), *boxes[:, 2:].max(0)))


MOUTH = mouth_box()


def open_mouth_pixels(image: np.ndarray) -> int:
    """Dark pixels (the inside of an open mouth) in the mouth region. Unlike a pixel diff this
    ignores the avatar's idle sway: about 20 at rest, 190-830 for the open shapes C D E F H."""
    x0, y0, x1, y1 = MOUTH
    crop = image[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4].astype(np.float32)
    return int(((crop @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) < 90).sum())


OPEN = 100


def session_alive(session_id: str) -> bool:
    try:
        ray.get_actor(f"session:{session_id}", namespace=SESSION_NAMESPACE)
        return True
    except ValueError:
        return False


async def wait_gone(session_id: str, timeout: float = 20) -> None:
    async def poll():
        while session_alive(session_id):
            await asyncio.sleep(0.2)

    await asyncio.wait_for(poll(), timeout)


async def test_page_health_docs_and_avatars(app_url):
    async with httpx.AsyncClient(base_url=app_url) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "<video" in page.text
        assert (await http.get("/static/app.js")).status_code == 200
        health = (await http.get("/api/health")).json()
        assert health["status"] == "ok" and health["max_sessions"] >= 1
        assert (await http.get("/docs")).status_code == 200
        assert "/api/sessions/{session_id}/say" in (await http.get("/openapi.json")).json()["paths"]
        avatars = (await http.get("/api/avatars")).json()["avatars"]
        assert "default" in [a["id"] for a in avatars]
        thumb = await http.get("/api/avatars/default/thumbnail")
        assert thumb.status_code == 200 and thumb.content[:8] == b"\x89PNG\r\n\x1a\n"


async def test_idle_video_at_25fps_with_silent_audio(app_url):
    session = await AvatarSession(app_url).start()
    try:
        await session.interrupt()  # skip the greeting: this test is about idling
        start = len(session.received.video)
        await session.wait_until(lambda r: len(r.video) >= start + 100, timeout=30)
        video = session.received.video[start + 25 : start + 100]  # after the flush settles
        assert np.median(np.diff([v.pts for v in video])) == 3600  # 40 ms in 90 kHz units
        fps = (len(video) - 1) / (video[-1].t - video[0].t)
        assert 20 <= fps <= 30, fps
        audio = [a for a in session.received.audio if a.t >= video[0].t]
        assert len(audio) >= 100  # 20 ms packets keep flowing
        assert max(a.rms for a in audio) < SILENCE_RMS
    finally:
        await session.close()


async def test_say_speaks_with_moving_mouth_that_rests_afterwards(app_url):
    session = await AvatarSession(app_url, keep_frames=open_mouth_pixels).start()
    try:
        await session.interrupt()
        await session.wait_until(lambda r: len(r.video) >= 10)
        assert session.received.video[-1].frame < OPEN
        turn_id = await session.say("Hello there! My mouth moves with every word I say to you.")
        speaking = await session.wait_event(lambda e: e["type"] == "state" and e.get("turn_id") == turn_id and e["state"] == "speaking")
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
        assert end["interrupted"] is False
        latency = await session.wait_event(lambda e: e["type"] == "latency" and e["turn_id"] == turn_id)
        assert 0 < latency["marks"]["tts_first_audio"] <= latency["marks"]["first_frame_sent"]

        talking = [v for v in session.received.video if speaking["received_at"] <= v.t <= end["received_at"]]
        speech_audio = [a for a in session.received.audio if speaking["received_at"] <= a.t <= end["received_at"]]
        assert len(talking) >= 50  # the sentence lasts several seconds
        assert np.mean([a.rms > SPEECH_RMS for a in speech_audio]) > 0.5
        openness = [v.frame for v in talking]
        assert np.mean(np.array(openness) > OPEN) > 0.3, f"the mouth barely opened: {openness}"
        assert min(openness) < OPEN  # and closed again between sounds

        # After the turn the mouth rests: wait one more second of frames and compare.
        n = len(session.received.video)
        await session.wait_until(lambda r: len(r.video) >= n + 25)
        after = session.received.video[n + 5 : n + 25]
        assert all(v.frame < OPEN for v in after), [v.frame for v in after]
        tail = [a for a in session.received.audio if a.t >= after[0].t]
        assert tail and max(a.rms for a in tail) < SILENCE_RMS
    finally:
        await session.close()


async def test_interrupt_silences_audio_within_a_few_frames(app_url):
    session = await AvatarSession(app_url).start()
    try:
        await session.interrupt()
        long_text = "This is a long answer that keeps going for quite a while. " * 4
        turn_id = await session.say(long_text)
        await session.wait_until(lambda r: sum(a.rms > SPEECH_RMS for a in r.audio[-50:]) > 20, timeout=30)
        assert (await session.interrupt()) == {"interrupted": True}
        n = len(session.received.audio)
        await session.wait_until(lambda r: len(r.audio) >= n + 60)
        after = [a.rms for a in session.received.audio[n : n + 60]]
        # "Within a few frames": at most 10 packets (200 ms) of speech still in flight.
        first_silent = next(i for i, rms in enumerate(after) if rms < SILENCE_RMS)
        assert first_silent <= 10, after[:15]
        assert max(after[first_silent + 5 :]) < SILENCE_RMS  # and it stays silent
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id)
        assert end["interrupted"] is True
    finally:
        await session.close()


async def test_typing_while_speaking_replaces_the_turn(app_url):
    session = await AvatarSession(app_url).start()
    try:
        first = await session.say("A first sentence that will be cut off before it can finish.")
        second = await session.say("Second.")
        cut = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == first)
        assert cut["interrupted"] is True
        done = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == second, timeout=60)
        assert done["interrupted"] is False
    finally:
        await session.close()


async def test_delete_removes_the_session_actor(app_url):
    session = await AvatarSession(app_url).start()
    session_id = session.session_id
    assert session_alive(session_id)
    await session.delete()
    assert not session_alive(session_id)
    async with httpx.AsyncClient(base_url=app_url) as http:
        response = await http.post(
            f"/api/sessions/{session_id}/say",
            json={"text": "hi"},
            headers={"Authorization": f"Bearer {session.token}"},
        )
        assert response.status_code == 404
    await session.close(delete=False)


async def test_client_disconnect_removes_the_session_actor(app_url):
    session = await AvatarSession(app_url).start()
    session_id = session.session_id
    await session.close(delete=False)  # just hang up, as a closed tab does
    await wait_gone(session_id)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert f"session:{session_id}" not in names
