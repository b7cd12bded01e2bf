"""The realtime conversation backend end to end: configs/realtime.yaml against a fake OpenAI
Realtime server on loopback (tests/fakes/realtime_server.py), with WebSocket clients that draw
the face themselves (`face: "visemes"`: every frame names its turn, so what the client got of
a reply is countable)."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os

import numpy as np
import pytest

from serve_app.client import ApiError, SocketSession
from tests.fakes.realtime_server import FakeRealtime
from tests.fakes.tts_servers import speech
from tests.integration.test_websocket import speak_into

pytestmark = pytest.mark.integration

LONG_REPLY = " ".join(["word"] * 40)  # ~14 s of speech: time to talk over it
GREETING = "Hi, I'm Ava. Ask me anything, and interrupt me whenever you like."
APOLOGY = "Sorry, I lost my connection for a moment. Please say that again."
KEY_ENV = "DH_TEST_REALTIME_KEY"  # set in tests/conftest.py before the cluster starts


@pytest.fixture(scope="module")
async def realtime_app(app_url):
    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_cluster import run_app

    fake = FakeRealtime(reply=LONG_REPLY).start()
    free = {"ray_actor_options": {"num_cpus": 0}}
    overrides = {
        "conversation": {"realtime": {"url": fake.ws_url, "api_key_env": KEY_ENV, "reply_timeout_s": 5,
                                      "connect_timeout_s": 5}},
        "sessions": {"warm_pool": 0, "actor_num_cpus": 0, "admission": {"enabled": False}},
        "tts": {"deployment": free}, "lipsync": {"deployment": free}, "ingress": free,
        "avatars": {"jobs": free},
    }
    app = build_app({"profile": "configs/realtime.yaml", "overrides": overrides})
    await asyncio.to_thread(run_app, app, "realtime", "/realtime", timeout_s=120)
    yield f"{app_url}/realtime", fake
    await asyncio.to_thread(serve.delete, "realtime")
    fake.stop()


def voice() -> np.ndarray:
    """The user talking: a buzz per word, which the fake server's VAD hears as speech."""
    pcm, _ = speech("one two three", 16000)
    return pcm


def turn_frames(session: SocketSession, turn_id: str) -> list[dict]:
    return [m for m in session.mouths if m.get("turn_id") == turn_id]


def words(session: SocketSession, turn_id: str) -> str:
    return "".join(e["text"] for e in session.received.events
                   if e["type"] == "assistant_text" and e["turn_id"] == turn_id).strip()


async def started_speaking(session: SocketSession, after: set[str]) -> str:
    """The id of the next turn (not in `after`) that starts speaking."""
    event = await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "speaking"
                                     and e["turn_id"] not in after, 30)
    return event["turn_id"]


async def ended(session: SocketSession, turn_id: str) -> dict:
    return await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, 60)


async def greeted(session: SocketSession) -> str:
    turn_id = await started_speaking(session, set())
    assert (await ended(session, turn_id))["interrupted"] is False
    return turn_id


async def greeted_then_asked(session: SocketSession, fake: FakeRealtime, question: str) -> tuple[str, str]:
    """Start the session, hear the greeting out, then ask `question` aloud: the greeting's and
    the answer's turn ids, once the answer speaks."""
    fake.transcripts.append(question)
    await session.start()
    greeting = await greeted(session)
    await speak_into(session, voice(), silence_s=0.6)
    return greeting, await started_speaking(session, {greeting})


async def test_the_greeting_is_the_servers_speech_with_a_moving_mouth(realtime_app):
    url, fake = realtime_app
    async with SocketSession(url, face="visemes") as session:
        await session.start()
        turn_id = await greeted(session)
        assert words(session, turn_id) == GREETING
        frames = turn_frames(session, turn_id)
        assert len(frames) > 50  # the greeting's ~7 s of audio, frame by frame
        assert np.mean([m["weight"] > 0.2 for m in frames]) > 0.3 and {m["viseme"] for m in frames} - {"X"}
        conn = fake.connections[-1]
        assert conn.headers["Authorization"] == f"Bearer {os.environ[KEY_ENV]}"
        assert conn.query["model"] == "gpt-realtime"
        update = conn.session
        assert update["audio"]["output"]["voice"] == "marin" and update["instructions"].startswith("You are Ava")
        assert update["audio"]["input"]["turn_detection"] == {"type": "semantic_vad"}
        assert sorted(t["name"] for t in update["tools"]) == ["current_time", "faq_lookup"]
        assert (await session.info())["voice"] == "marin"


async def test_voices_are_the_servers_and_the_pipelines_controls_are_refused_with_reasons(realtime_app, http):
    url, _ = realtime_app
    voices = (await http.get("/realtime/api/voices")).json()["voices"]
    assert [(v["id"], v["backend"], v["default"]) for v in voices] == [("marin", "realtime", True)]
    async with SocketSession(url, face="visemes") as session:
        await session.start()
        assert (await session.update(voice="marin"))["voice"] == "marin"
        with pytest.raises(ApiError) as refused:
            await session.update(voice="alloy")
        assert refused.value.status == 400 and "fixed per session" in refused.value.detail
        await session.send({"type": "mic_mode", "mode": "push_to_talk"})
        error = await session.wait_event(lambda e: e["type"] == "error" and e["stage"] == "control", 30)
        assert "server detects when you speak" in error["message"]


async def test_barge_in_truncates_the_reply_to_what_the_client_received(realtime_app):
    url, fake = realtime_app
    async with SocketSession(url, face="visemes") as session:
        greeting, answer = await greeted_then_asked(session, fake, "Tell me about words.")
        transcript = await session.wait_event(lambda e: e["type"] == "user_transcript", 30)
        assert (transcript["turn_id"], transcript["text"]) == (answer, "Tell me about words.")
        await session.wait_until(lambda s: len(turn_frames(s, answer)) >= 40, 30)  # 1.6 s of it heard
        truncates = len(fake.of_type("conversation.item.truncate"))
        await speak_into(session, voice(), silence_s=0.6)  # the user talks over it
        await session.wait_event(lambda e: e["type"] == "barge_in", 30)
        assert (await ended(session, answer))["interrupted"] is True
        await session.wait_until(lambda s: len(fake.of_type("conversation.item.truncate")) > truncates, 30)
        truncate = fake.of_type("conversation.item.truncate")[-1]
        received_ms = 40 * len(turn_frames(session, answer))
        assert 1600 <= truncate["audio_end_ms"] <= received_ms
        assert received_ms < 0.8 * 1000 * len(LONG_REPLY.split()) * 0.36  # it was cut well before its end


async def test_a_tool_call_round_trips_and_its_answer_is_spoken(realtime_app):
    url, fake = realtime_app
    async with SocketSession(url, face="visemes") as session:
        asked = dt.datetime.now(dt.timezone.utc)
        _, answer = await greeted_then_asked(session, fake, "What time is it?")
        assert (await ended(session, answer))["interrupted"] is False
        [output] = [e for e in fake.of_type("conversation.item.create")
                    if e["item"]["type"] == "function_call_output"][-1:]
        told = json.loads(output["item"]["output"])["time"]
        assert told in {(asked + dt.timedelta(minutes=m)).strftime("%H:%M") for m in (0, 1)}
        assert words(session, answer) == f"It is {told} in UTC."
        assert np.mean([m["weight"] > 0.2 for m in turn_frames(session, answer)]) > 0.3


async def test_a_model_that_keeps_calling_tools_is_stopped_after_the_cap(realtime_app):
    """conversation.realtime.max_tool_rounds (4): the fifth round is not answered; the user
    gets an error naming the cap and the apology."""
    url, fake = realtime_app
    async with SocketSession(url, face="none") as session:
        outputs_before = len([e for e in fake.of_type("conversation.item.create")
                              if e["item"]["type"] == "function_call_output"])
        fake.mode = "tool_loop"
        try:
            fake.transcripts.append("What time is it?")
            await session.start()
            greeting = await greeted(session)
            await speak_into(session, voice(), silence_s=0.6)
            error = await session.wait_event(lambda e: e["type"] == "error" and "tools" in e["message"], 60)
        finally:
            fake.mode = "ok"
        assert error["stage"] == "realtime" and "4 rounds" in error["message"]
        outputs = [e for e in fake.of_type("conversation.item.create")
                   if e["item"]["type"] == "function_call_output"][outputs_before:]
        assert len(outputs) == 4  # each round answered, then no more
        apology = await started_speaking(session, {greeting})
        assert words(session, apology) == APOLOGY


async def test_the_server_closing_mid_reply_gives_an_error_an_apology_and_a_reconnect(realtime_app):
    url, fake = realtime_app
    async with SocketSession(url, face="visemes") as session:
        await session.start()
        greeting = await greeted(session)
        connections = len(fake.connections)
        fake.mode = "close"
        try:
            await speak_into(session, voice(), silence_s=0.6)
            error = await session.wait_event(lambda e: e["type"] == "error", 30)
        finally:
            fake.mode = "ok"
        assert error["stage"] == "realtime" and "closed the connection" in error["message"]
        assert os.environ[KEY_ENV] not in json.dumps(session.received.events)
        cut = error["turn_id"]
        assert (await ended(session, cut))["interrupted"] is True
        apology = await started_speaking(session, {greeting, cut})
        assert (await ended(session, apology))["interrupted"] is False
        assert words(session, apology) == APOLOGY
        assert np.mean([m["weight"] > 0.2 for m in turn_frames(session, apology)]) > 0.3  # the fallback voice
        # The next turn reconnects and is answered.
        fake.transcripts.append("Are you back?")
        await speak_into(session, voice(), silence_s=0.6)
        answer = await started_speaking(session, {greeting, cut, apology})
        assert len(fake.connections) == connections + 1
        assert words(session, answer).startswith("word word")
