"""Spoken conversation over a real aiortc peer: the client's mic sends Piper-made speech."""
from __future__ import annotations

import numpy as np
import pytest

from serve_app.client import MIC_RATE, AvatarSession, MicTrack
from serve_app.engines.audio import StreamResampler
from serve_app.engines.tts.piper_tts import PiperTTS

pytestmark = pytest.mark.integration

SPEECH_RMS = 300.0
SILENCE_RMS = 30.0
MARK_ORDER = ["speech_end", "asr_done", "llm_first_token", "tts_first_audio", "first_frame_sent"]


async def speak(text: str) -> np.ndarray:
    """Piper speech as 48 kHz float32, as a browser mic would send it."""
    resampler, parts = None, []
    async for chunk in PiperTTS().stream(text):
        resampler = resampler or StreamResampler(chunk.sample_rate, MIC_RATE)
        parts.append(resampler.push(chunk.samples))
    parts.append(resampler.flush())
    return np.concatenate(parts) * 0.7


@pytest.fixture(scope="module")
async def voices() -> dict[str, np.ndarray]:
    texts = {
        "question": "What is the capital of France?",
        "story": "Please tell me a long story about a dragon who learns to fly over the sea.",
        "stop": "Wait, stop. What is two plus two?",
        "tell_me": "Tell me,",
        "rest": "what is the capital of France?",
    }
    return {name: await speak(text) for name, text in texts.items()}


def voiced(x: np.ndarray, level: float = 0.003) -> np.ndarray:
    """`x` without Piper's leading and trailing silence (below `level`, -50 dBFS)."""
    loud = np.flatnonzero(np.abs(x) > level)
    return x[loud[0] : loud[-1] + 1]


async def mic_session(url: str) -> tuple[AvatarSession, MicTrack]:
    mic = MicTrack()
    session = await AvatarSession(url, mic=mic).start()
    await session.interrupt()  # no greeting in these tests
    return session, mic


def events(session: AvatarSession, kind: str, **match) -> list[dict]:
    return [e for e in session.received.events if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]


async def test_spoken_question_gets_a_spoken_lip_synced_answer(app_url, voices):
    session, mic = await mic_session(app_url)
    try:
        mic.play(voices["question"])
        heard = await session.wait_event(lambda e: e["type"] == "user_transcript", timeout=30)
        words = heard["text"].lower()
        assert "capital" in words and "france" in words, heard
        turn_id = heard["turn_id"]
        speaking = await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "speaking" and e.get("turn_id") == turn_id, timeout=30)
        latency = await session.wait_event(lambda e: e["type"] == "latency" and e["turn_id"] == turn_id)
        marks = latency["marks"]
        assert set(marks) == {*MARK_ORDER, "end_confirmed"}, marks
        assert [marks[m] for m in MARK_ORDER] == sorted(marks[m] for m in MARK_ORDER)
        # The reply was started in the pause, before the VAD's end-of-speech silence was up,
        # and let out when the VAD confirmed the end (actors/speculation.py).
        assert (await session.info())["speculative_replies"] == {"started": 1, "confirmed": 1}
        assert events(session, "assistant_text", turn_id=turn_id, delta=True)  # streamed text
        n = len(session.received.audio)
        await session.wait_until(lambda r: sum(a.rms > SPEECH_RMS for a in r.audio[n:]) >= 25, timeout=30)
        assert session.received.events.index(speaking) > session.received.events.index(heard)
    finally:
        await session.close()


async def test_a_pause_mid_question_discards_its_speculative_reply(app_url, voices):
    # A 0.28 s pause: the VAD hears ~0.2-0.25 s of it, past the 0.15 s at which a reply is
    # started speculatively, short of the 0.3 s that ends the utterance.
    session, mic = await mic_session(app_url)
    try:
        before = len(events(session, "state", state="thinking"))
        pause = np.zeros(int(0.28 * MIC_RATE), np.float32)
        mic.play(np.concatenate([voiced(voices["tell_me"]), pause, voiced(voices["rest"])]))
        heard = await session.wait_event(lambda e: e["type"] == "user_transcript", timeout=30)
        assert "tell" in heard["text"].lower() and "france" in heard["text"].lower(), heard
        turn_id = heard["turn_id"]
        await session.wait_event(lambda e: e["type"] == "latency" and e["turn_id"] == turn_id, timeout=30)
        assert (await session.info())["speculative_replies"] == {"started": 2, "confirmed": 1}
        # Nothing of the discarded reply reached the client.
        assert len(events(session, "user_transcript")) == 1
        thinking = events(session, "state", state="thinking")[before:]
        assert [e.get("turn_id") for e in thinking] == [turn_id]
        assert {e["turn_id"] for e in events(session, "assistant_text", delta=True)} == {turn_id}
    finally:
        await session.close()


async def test_barge_in_cancels_the_whole_turn(app_url, voices):
    session, mic = await mic_session(app_url)
    try:
        mic.play(voices["story"])
        story = await session.wait_event(lambda e: e["type"] == "user_transcript", timeout=30)
        await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "speaking" and e.get("turn_id") == story["turn_id"], timeout=30)
        n = len(session.received.audio)
        await session.wait_until(lambda r: sum(a.rms > SPEECH_RMS for a in r.audio[n:]) >= 10, timeout=30)

        mic.play(voices["stop"])  # the user talks over the avatar
        barge = await session.wait_event(lambda e: e["type"] == "barge_in", timeout=10)
        cut = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == story["turn_id"])
        assert cut["interrupted"] is True
        # Silence at the client from shortly after the barge-in until the next reply starts.
        await session.wait_until(lambda r: len([a for a in r.audio if a.t > barge["received_at"]]) >= 40)
        after = [a.rms for a in session.received.audio if a.t > barge["received_at"]][:40]
        first_silent = next(i for i, rms in enumerate(after) if rms < SILENCE_RMS)
        assert first_silent <= 10 and max(after[first_silent + 5 :]) < SILENCE_RMS, after
        # The LLM stream of the cut turn was closed: no more text for it after the barge-in.
        late = [e for e in events(session, "assistant_text", turn_id=story["turn_id"]) if e["received_at"] > cut["received_at"]]
        assert not late
        nxt = await session.wait_event(lambda e: e["type"] == "user_transcript" and e["turn_id"] != story["turn_id"], timeout=30)
        assert "plus" in nxt["text"].lower()
    finally:
        await session.close()


async def test_noise_and_silence_make_no_turn(app_url, voices):
    session, mic = await mic_session(app_url)
    try:
        rng = np.random.default_rng(1)
        before = len(events(session, "state", state="thinking"))  # the greeting's
        mic.play(np.zeros(MIC_RATE, np.float32))
        mic.play(rng.normal(0, 10 ** (-35 / 20), 3 * MIC_RATE).astype(np.float32))  # -35 dBFS hiss
        t = np.arange(2 * MIC_RATE) / MIC_RATE
        mic.play((0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32))  # mains hum
        mic.play(voices["question"])  # then a real question: it must be the first turn
        heard = await session.wait_event(lambda e: e["type"] == "user_transcript", timeout=40)
        assert "france" in heard["text"].lower()
        assert len(events(session, "user_transcript")) == 1
        thinking = events(session, "state", state="thinking")[before:]
        assert [e.get("turn_id") for e in thinking] == [heard["turn_id"]]
    finally:
        await session.close()


async def test_monologue_is_cut_at_the_configured_maximum(app_url, voices):
    session, mic = await mic_session(app_url)
    try:
        # ~22 s of speech without a pause long enough to end the utterance (max is 20 s).
        story = voiced(voices["story"], level=0.01)
        while mic.queued_s() < 22:
            mic.play(story)
        cut = await session.wait_event(lambda e: e["type"] == "utterance_truncated", timeout=40)
        assert cut["max_s"] == 20 and "20" in cut["message"]
        heard = await session.wait_event(lambda e: e["type"] == "user_transcript", timeout=30)
        # What was said up to the cut is answered. Piper's voice differs run to run and tiny.en
        # mishears some words ("i drag in who learns to fly over the sea" once), so: some of its words.
        words = set("".join(c if c.isalpha() else " " for c in heard["text"].lower()).split())
        story = {"please", "tell", "long", "story", "dragon", "learns", "fly", "over", "sea"}
        assert len(words & story) >= 3, heard["text"]
    finally:
        await session.close()


async def test_typed_question_is_answered_by_the_llm(app_url):
    session = await AvatarSession(app_url).start()
    try:
        turn_id = await session.ask("Say hello to me.")
        latency = await session.wait_event(lambda e: e["type"] == "latency" and e["turn_id"] == turn_id, timeout=30)
        assert list(latency["marks"]) == ["request", "llm_first_token", "tts_first_audio", "first_frame_sent"]
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=90)
        assert end["interrupted"] is False
        assert "".join(e["text"] for e in events(session, "assistant_text", turn_id=turn_id)).strip()
    finally:
        await session.close()


async def test_dead_llm_gives_error_event_and_spoken_apology(degraded_url):
    session = await AvatarSession(degraded_url).start()
    try:
        turn_id = await session.ask("Are you there?")
        error = await session.wait_event(lambda e: e["type"] == "error" and e.get("turn_id") == turn_id, timeout=30)
        assert error["stage"] == "llm" and error["message"]
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)
        assert end["interrupted"] is False
        assert events(session, "state", state="speaking", turn_id=turn_id)  # the apology was spoken
        again = await session.say("Still alive.")  # and the session lives on
        await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == again, timeout=60)
    finally:
        await session.close()


async def test_dead_asr_gives_error_event_and_spoken_apology(degraded_url, voices):
    mic = MicTrack()
    session = await AvatarSession(degraded_url, mic=mic).start()
    try:
        await session.interrupt()
        mic.play(voices["question"])
        error = await session.wait_event(lambda e: e["type"] == "error" and e.get("stage") == "asr", timeout=30)
        assert "ws://127.0.0.1:9" in error["message"] or "recognition" in error["message"]
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == error["turn_id"], timeout=60)
        assert end["interrupted"] is False
    finally:
        await session.close()
