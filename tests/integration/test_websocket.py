"""WebSocket sessions with a real websockets client over loopback: typed and spoken turns,
barge-in, resume, refusals, and a client that stops reading."""
from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest
import websockets

from serve_app.client import SocketSession

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPEECH_RMS = 300.0


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    """A real voice asking "What is the weather like today?": PCM16 mono 16 kHz."""
    with wave.open(str(FIXTURES / "weather_question.wav")) as clip:
        return np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)


async def speak_into(session: SocketSession, pcm: np.ndarray, silence_s: float = 1.0) -> None:
    """Send mic audio in 20 ms frames at the pace a microphone would, then silence."""
    audio = np.concatenate([pcm, np.zeros(int(16000 * silence_s), np.int16)])
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, at in enumerate(range(0, len(audio), 320)):
        await session.send(audio[at:at + 320].tobytes())
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))  # a real-time mic


def turn_end(session: SocketSession, turn_id: str):
    return session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, 60)


async def test_say_over_websocket_sends_audio_and_changing_jpeg_frames_on_one_clock(app_url):
    async with SocketSession(app_url, face="jpeg", keep_frames=True) as session:
        welcome = await session.connect()
        assert welcome["type"] == "welcome" and welcome["face"] == "jpeg" and not welcome["resumed"]
        assert (welcome["fps"], welcome["audio_rate"]) == (25, 48000)
        await session.wait_event(lambda e: e["type"] == "ready")
        await session.interrupt()
        await session.send({"type": "say", "text": "Hello there, this is a test of the socket."})
        said = await session.wait_event(lambda e: e["type"] == "assistant_text" and "socket" in e["text"])
        end = await turn_end(session, said["turn_id"])
        assert end["interrupted"] is False
        loud = [a.frame for a in session.audio if a.rms > SPEECH_RMS]
        assert len(loud) > 25, "under a second of speech heard"
        by_frame = {j.frame: j.data for j in session.jpegs}
        talking = [by_frame[f] for f in loud if f in by_frame]
        assert len(talking) > 20 and len(set(talking)) > 5  # the mouth moves while it speaks
        frames = [a.frame for a in session.audio]
        assert frames == sorted(frames) and len(set(frames)) == len(frames)  # one audio unit per frame
        assert set(by_frame) <= set(frames) | {frames[-1] + 1, frames[-1] + 2}  # the same clock


async def test_mouth_keyframes_carry_the_audio_clock(app_url):
    async with SocketSession(app_url, face="visemes") as session:
        await session.connect()
        await session.wait_event(lambda e: e["type"] == "ready")
        await session.interrupt()
        turn = await session.say("Wide open vowels, and then closed lips.")
        await turn_end(session, turn)
        mouths = {m["frame"]: m for m in session.mouths}
        assert not session.jpegs and all(m["t_ms"] == m["frame"] * 40 for m in mouths.values())
        loud = [a.frame for a in session.audio if a.rms > SPEECH_RMS and a.frame in mouths]
        assert len(loud) > 20
        assert sum(mouths[f]["viseme"] != "X" and mouths[f]["weight"] > 0.2 for f in loud) > 0.7 * len(loud)
        quiet = [f for f, m in mouths.items() if m["turn_id"] is None]
        assert quiet and all(mouths[f]["weight"] == 0 for f in quiet)  # idle frames: mouth at rest


async def test_a_spoken_question_in_mic_frames_gets_a_transcript_and_an_answer(app_url, question):
    async with SocketSession(app_url) as session:
        await session.connect()
        await session.wait_event(lambda e: e["type"] == "ready")
        await session.interrupt()
        await speak_into(session, question)
        heard = await session.wait_event(lambda e: e["type"] == "user_transcript", 60)
        assert "weather" in heard["text"].lower()
        end = await turn_end(session, heard["turn_id"])
        assert end["interrupted"] is False
        assert any(e["type"] == "assistant_text" and e["turn_id"] == heard["turn_id"] for e in session.received.events)


async def test_speaking_over_the_avatar_barges_in(app_url, question):
    async with SocketSession(app_url) as session:
        await session.connect()
        await session.wait_event(lambda e: e["type"] == "ready")
        await session.interrupt()
        turn = await session.say("Once upon a time there was a very long story that went on and on "
                                 "about many things, and it did not stop for a very long while at all.")
        await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "speaking" and e["turn_id"] == turn)
        await speak_into(session, question, silence_s=0.2)
        await session.wait_event(lambda e: e["type"] == "barge_in", 30)
        end = await turn_end(session, turn)
        assert end["interrupted"] is True


async def test_reconnecting_with_the_token_resumes_the_same_session(app_url):
    async with SocketSession(app_url) as session:
        await session.connect()
        await session.wait_event(lambda e: e["type"] == "ready")
        await session.interrupt()
        await turn_end(session, await session.ask("My name is Robin."))
        before = await session.info()
        await session.disconnect()
        session.received.events.clear()
        welcome = await session.connect()
        assert welcome["resumed"] is True and welcome["session_id"] == session.session_id
        await session.wait_event(lambda e: e["type"] == "ready")
        after = await session.info()
        assert after["exchanges"] == before["exchanges"] == 1 and after["avatar"] == before["avatar"]
        assert after["websocket"] is not None
        greeted = [e for e in session.received.events if e["type"] == "assistant_text"]
        assert not greeted  # no second greeting


async def test_refusals_get_the_documented_close_codes_and_error_events(app_url):
    async with SocketSession(app_url) as session:
        assert await session.connect(token="not-the-token") is None and session.close_code == 4403
        assert await session.connect(hello={"type": "hi"}) is None and session.close_code == 4400
        unknown = SocketSession(app_url)
        unknown.session_id, unknown.token = "0" * 32, "x"
        assert await unknown.connect() is None and unknown.close_code == 4404
        await unknown.http.aclose()
        async with websockets.connect(session.socket_url()) as raw:  # not JSON at all
            await raw.send("{{")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await raw.recv()
            assert closed.value.rcvd.code == 4400 and "bad hello" in closed.value.rcvd.reason
        await session.connect()
        await session.wait_event(lambda e: e["type"] == "ready")
        for bad in ("[]", '{"type": "dance"}', '{"type": "say"}', '{"type": "say", "text": "   "}'):
            await session.send(bad)  # as text
        await session.wait_until(lambda s: sum(e["type"] == "error" and e["stage"] == "control"
                                               for e in s.received.events) >= 4)
        messages = [e["message"] for e in session.received.events if e["type"] == "error"]
        assert any("dance" in m for m in messages) and any("text is empty" in m for m in messages)
        await session.send(b"\x01\x02\x03")  # odd-length mic bytes: ignored, the session lives on
        turn = await session.say("Still here.")
        assert (await turn_end(session, turn))["interrupted"] is False


async def test_a_client_that_stops_reading_loses_frames_not_server_memory(app_url):
    async with SocketSession(app_url) as session:
        await session.connect()
        await session.wait_event(lambda e: e["type"] == "ready")
        await session.interrupt()
        session.pause_reading()  # no more reads, so no more acks

        async def dropped(at_least: int) -> dict:
            while True:
                info = (await session.info())["websocket"]
                if info["audio_dropped"] >= at_least:
                    return info
                await asyncio.sleep(0.2)  # polling the server's counters, not timing the test

        first = await asyncio.wait_for(dropped(10), 30)
        later = await asyncio.wait_for(dropped(60), 30)
        assert later["video_dropped"] >= later["audio_dropped"] >= 60
        # Past the ack window nothing more is queued for it: only pings (tens of bytes).
        assert later["queued_bytes"] - first["queued_bytes"] < 1000
        assert later["frames"] > first["frames"]  # the session's clock runs on
