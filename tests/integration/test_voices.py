"""Every TTS backend in one app, each against a fake of its service on loopback
(tests/fakes/tts_servers.py): a session switches voices and hears each one with mouth motion;
a voice whose server is gone is reported and the fallback voice (Piper) says the reply."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve_app.client import AvatarSession
from tests.fakes.tts_servers import FakeCosyVoice, FakeEdge, FakeOpenAISpeech, FakeSovits
from tests.integration.test_session_media import OPEN, SPEECH_RMS, open_mouth_pixels

pytestmark = pytest.mark.integration

VOICES = {"en-US-AriaNeural": "edge", "jingyuan": "gpt_sovits", "nova": "openai", "sft_woman": "cosyvoice"}


@pytest.fixture(scope="module")
async def voices_app(app_url):
    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_cluster import run_app

    fakes = {"edge": FakeEdge(), "gpt_sovits": FakeSovits(), "openai": FakeOpenAISpeech(), "cosyvoice": FakeCosyVoice()}
    for fake in fakes.values():
        fake.start()
    overrides = {
        "sessions": {"create_token_env": None, "max_sessions_per_client": None,
                     "creations_per_min_per_client": None, "max_lifetime_s": 600},
        "tts": {
            "backend": "edge", "timeout_s": 10,
            "options": {"voices": ["en-US-AriaNeural"], "endpoint": fakes["edge"].endpoint, "timeout_s": 2},
            "engines": {
                "sovits": {"backend": "gpt_sovits", "options": {"base_url": fakes["gpt_sovits"].url, "voices": {
                    "jingyuan": {"ref_audio_path": "/refs/a.wav", "prompt_text": "hi", "prompt_lang": "en",
                                 "text_lang": "en"}}}},
                "openai": {"backend": "openai", "options": {
                    "base_url": fakes["openai"].url + "/v1", "voices": ["nova"], "api_key_env": None}},
                "cosy": {"backend": "cosyvoice", "options": {
                    "base_url": fakes["cosyvoice"].url, "voices": {"sft_woman": {"spk_id": "中文女"}}}},
            },
        },
    }
    app = build_app({"profile": "tests/fixtures/strict.yaml", "overrides": overrides})
    await asyncio.to_thread(run_app, app, "voices", "/voices", timeout_s=120)
    yield f"{app_url}/voices", fakes
    await asyncio.to_thread(serve.delete, "voices")
    for fake in fakes.values():
        if fake.port:
            fake.stop()


async def test_voices_are_listed_with_their_backends(voices_app, http):
    voices = (await http.get("/voices/api/voices")).json()["voices"]
    by_id = {v["id"]: v for v in voices}
    assert {k: by_id[k]["backend"] for k in VOICES} == VOICES
    assert by_id["en-US-AriaNeural"]["default"] and by_id["joe"]["fallback"] and by_id["joe"]["backend"] == "piper"


async def speak(session: AvatarSession, text: str) -> tuple[dict, list, list]:
    """Say `text`; the turn's events, and the video and audio received while it spoke."""
    turn_id = await session.say(text)
    speaking = await session.wait_event(lambda e: e["type"] == "state" and e.get("turn_id") == turn_id
                                        and e["state"] == "speaking", timeout=30)
    end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
    video = [v for v in session.received.video if speaking["received_at"] <= v.t <= end["received_at"]]
    audio = [a for a in session.received.audio if speaking["received_at"] <= a.t <= end["received_at"]]
    events = [e for e in session.received.events if e.get("turn_id") == turn_id]
    return {"end": end, "events": events}, video, audio


async def test_each_backend_speaks_with_mouth_motion(voices_app):
    url, fakes = voices_app
    session = await AvatarSession(url, keep_frames=open_mouth_pixels).start()
    try:
        await session.interrupt()
        for voice, backend in VOICES.items():
            assert (await session.update(voice=voice))["voice"] == voice
            before = len(fakes[backend].requests)
            turn, video, audio = await speak(session, "One two three four five six.")
            assert turn["end"]["interrupted"] is False, (voice, turn)
            assert not [e for e in turn["events"] if e["type"] == "error"], (voice, turn)
            assert len(fakes[backend].requests) == before + 1, voice  # that server said it
            assert np.mean([a.rms > SPEECH_RMS for a in audio]) > 0.3, voice
            openness = np.array([v.frame for v in video])
            assert np.mean(openness > OPEN) > 0.2 and openness.min() < OPEN, (voice, openness)
    finally:
        await session.close()


async def test_a_voice_whose_server_is_gone_is_reported_and_the_fallback_speaks(voices_app):
    url, fakes = voices_app
    fakes["edge"].stop()  # its port closes: edge-tts cannot connect
    fakes["edge"].port = 0
    session = await AvatarSession(url, keep_frames=open_mouth_pixels).start()
    try:
        await session.interrupt()
        await session.update(voice="en-US-AriaNeural")
        turn, video, audio = await speak(session, "Hello there, my mouth still moves.")
        errors = [e for e in turn["events"] if e["type"] == "error"]
        assert len(errors) == 1 and errors[0]["stage"] == "tts", turn
        assert "cannot reach edge-tts" in errors[0]["message"] and "fallback voice" in errors[0]["message"]
        assert turn["end"]["interrupted"] is False
        assert np.mean([a.rms > SPEECH_RMS for a in audio]) > 0.3
        assert np.mean(np.array([v.frame for v in video]) > OPEN) > 0.2
        # The next reply does not wait on the dead server again: the breaker refuses it at once.
        turn, _, audio = await speak(session, "And again.")
        [error] = [e for e in turn["events"] if e["type"] == "error"]
        assert "resting after a failure" in error["message"] and turn["end"]["interrupted"] is False
    finally:
        await session.close()
