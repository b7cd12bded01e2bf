"""Faults on the real cluster: a model replica killed mid-turn costs at most that turn (the
client gets a clean error event and the turn ends; the next turn speaks once Serve has
replaced the replica); a killed session actor is forgotten, and its client's peer closes.
A bystander streams through all."""
from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest
import ray

from serve_app.client import AvatarSession, MicTrack
from serve_app.events import CHANNEL_LOST_S
from tests.integration.support import assert_still_streams_and_speaks

pytestmark = pytest.mark.integration

APP = "digital_human"
RAY_INSIDES = ("pid=", "ip=", "Traceback", "actor_id", "127.0.0.1")
LONG = ("This is a long answer with many sentences. It goes on for a while. "
        "Then it says some more. And a little more. And then it ends, eventually.")


def kill_replica(deployment: str, app: str = APP) -> None:
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")]
    assert replicas, f"no {deployment} replica found"
    for replica in replicas:
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)


async def speaks_again(session: AvatarSession, text: str, deadline_s: float = 120) -> None:
    """`say` until a turn is spoken to its end: the first may meet the replica still missing."""
    loop = asyncio.get_running_loop()
    end_by = loop.time() + deadline_s
    while True:
        turn_id = await session.say(text)
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
        if not end["interrupted"]:
            return
        assert loop.time() < end_by, "no turn was spoken after the replica was replaced"


@pytest.mark.parametrize("deployment, stage, start", [
    ("TTS", "tts", "say"),
    ("LipSync", "lipsync", "say"),
    ("LLM", "llm", "ask"),
])
async def test_replica_killed_mid_turn_costs_at_most_that_turn(app_url, bystander, deployment, stage, start):
    session = await AvatarSession(app_url).start()
    try:
        await session.interrupt()  # no greeting in the way
        turn_id = await (session.say(LONG) if start == "say" else session.ask("Tell me a long story."))
        if start == "say":  # killed while it speaks
            await session.wait_event(lambda e: e.get("turn_id") == turn_id and e.get("state") == "speaking", 60)
        else:  # killed while it thinks
            await session.wait_event(lambda e: e.get("turn_id") == turn_id and e.get("state") == "thinking", 60)
        await asyncio.to_thread(kill_replica, deployment)
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
        await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "idle"
                                 and e["received_at"] >= end["received_at"], timeout=10)
        errors = [e for e in session.received.events if e["type"] == "error"]
        for error in errors:  # the turn may also have finished before the replica went
            assert error["stage"] == stage and error["turn_id"] == turn_id, error
            assert not any(word in error["message"] for word in RAY_INSIDES), error
        # Nothing more of a reply that lost its face, or its voice with no fallback voice left
        # (a TTS error saying the fallback goes on may be followed by the rest of the reply).
        final = [e for e in errors if "the fallback voice goes on" not in e["message"]]
        if final and stage != "llm":
            assert end["interrupted"] is True
        await speaks_again(session, "I am back.")
        assert (await session.info())["connection"] == "connected"  # the same session lived on
    finally:
        await session.close()


def weather_question() -> np.ndarray:
    """A real voice asking "What is the weather like today?": PCM16 mono 16 kHz."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "weather_question.wav"
    with wave.open(str(path)) as clip:
        return np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)


async def test_asr_replica_killed_while_the_user_speaks_costs_at_most_that_turn(app_url, bystander):
    """The ASR replica dies while the user is asking: that question may be lost (an error
    naming the ASR, an apology), the session lives on, and a question asked once Serve has
    replaced the replica is heard."""
    mic = MicTrack()
    session = await AvatarSession(app_url, mic=mic).start()
    question = weather_question()
    try:
        await session.interrupt()  # no greeting in the way
        mic.play(question, sample_rate=16_000)
        listening = await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "listening", 30)
        await asyncio.to_thread(kill_replica, "ASR")
        end = await session.wait_event(lambda e: e["type"] == "turn_end"
                                       and e["received_at"] >= listening["received_at"], timeout=60)
        for error in [e for e in session.received.events if e["type"] == "error"]:
            assert error["stage"] == "asr" and error["turn_id"] == end["turn_id"], error
            assert not any(word in error["message"] for word in RAY_INSIDES), error
        loop = asyncio.get_running_loop()
        end_by = loop.time() + 120
        while True:  # ask again until the replaced replica hears it
            asked_at = loop.time()
            await mic.drained()
            mic.play(question, sample_rate=16_000)
            heard = await session.wait_event(
                lambda e: e["received_at"] >= asked_at and (
                    e["type"] == "user_transcript" or (e["type"] == "error" and e["stage"] == "asr")), timeout=60)
            if heard["type"] == "user_transcript":
                assert "weather" in heard["text"].lower(), heard
                break
            assert loop.time() < end_by, "no question was heard after the ASR replica was replaced"
        assert (await session.info())["connection"] == "connected"  # the same session lived on
    finally:
        await session.close()


async def test_a_killed_session_actor_is_forgotten(app_url, http, bystander):
    session = await AvatarSession(app_url).start()
    try:
        before = (await http.get("/api/health")).json()["sessions"]
        actor = ray.get_actor(f"session:{session.session_id}", namespace="digital_human")
        await asyncio.to_thread(ray.kill, actor, no_restart=True)

        async def forgotten() -> None:
            while (await http.get("/api/health")).json()["sessions"] != before - 1:
                await asyncio.sleep(0.2)

        await asyncio.wait_for(forgotten(), 30)
        response = await http.get(f"/api/sessions/{session.session_id}",
                                  headers={"Authorization": f"Bearer {session.token}"})
        assert response.status_code == 404

        async def peer_closed() -> None:  # the client's data-channel pings went unanswered
            while session.pc.connectionState != "closed":
                await asyncio.sleep(0.2)

        # ICE consent alone would take ~30 s: the heartbeat closes the peer within ~CHANNEL_LOST_S.
        await asyncio.wait_for(peer_closed(), CHANNEL_LOST_S + 10)
        assert session.lost
    finally:
        await session.close()


# --- a stage that hangs --------------------------------------------------------------------
# strict.yaml's app with its LLM pointed at a server that accepts connections and never
# answers; the LLM client would wait 60 s, the stage's deadline (llm.timeout_s) is 2 s.
async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads the request, answers nothing, until the client gives up


@pytest.fixture(scope="module")
async def hanging_url(app_url):
    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_cluster import run_app

    server = await asyncio.start_server(_hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    overrides = {
        "sessions": {"create_token_env": None, "max_sessions_per_client": None,
                     "creations_per_min_per_client": None},
        "llm": {"timeout_s": 2, "options": {"base_url": f"http://127.0.0.1:{port}/v1", "timeout_s": 60}},
    }
    app = build_app({"profile": "tests/fixtures/strict.yaml", "overrides": overrides})
    await asyncio.to_thread(run_app, app, "hanging", "/hanging", timeout_s=120)
    yield f"{app_url}/hanging"
    await asyncio.to_thread(serve.delete, "hanging")
    server.close()


async def test_a_hung_stage_ends_the_turn_within_its_timeout_and_the_session_lives_on(hanging_url):
    session = await AvatarSession(hanging_url).start()
    try:
        await session.interrupt()  # no greeting in the way
        turn_id = await session.ask("Are you there?")
        error = await session.wait_event(lambda e: e["type"] == "error" and e.get("turn_id") == turn_id, 30)
        assert error["stage"] == "llm" and "within 2 s" in error["message"], error
        assert not any(word in error["message"] for word in RAY_INSIDES), error
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, 30)
        await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "idle"
                                 and e["received_at"] >= end["received_at"], timeout=10)
        # The character's apology was spoken in that turn; the session speaks on.
        assert any(e["type"] == "state" and e["state"] == "speaking" and e.get("turn_id") == turn_id
                   for e in session.received.events)
        await speaks_again(session, "Still here.")
    finally:
        await session.close()


async def test_bystander_streamed_through_the_faults(bystander):
    await assert_still_streams_and_speaks(bystander, "Still here after the faults.")
    assert not [e for e in bystander.received.events if e["type"] == "error"]
