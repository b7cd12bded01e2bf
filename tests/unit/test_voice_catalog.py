"""The voice catalog (engines by voice id, a breaker per engine, the fallback engine) and the
session side of a failed voice: `synthesized` hands the reply to the fallback voice once."""
from __future__ import annotations

import numpy as np
import pytest

from actors.errors import StageFailed
from actors.turn import synthesized
from serve_app.engines.lipsync.visemes import VisemeTrack
from serve_app.engines.tts.base import DEFAULT_STYLE, AudioChunk, TTSUnavailable, Voice, WordSpan
from serve_app.engines.tts.catalog import Breaker, VoiceCatalog
from tests.unit.stage_fakes import FakeHandle


class Engine:
    """A TTS engine that says each text as one chunk, or fails while `broken`."""

    def __init__(self, *voices: str, language: str = "en-US") -> None:
        self._voices = [Voice(v, language) for v in voices]
        self.broken = False
        self.calls: list[tuple] = []

    def voices(self):
        return self._voices

    async def stream(self, text, voice=None, style=DEFAULT_STYLE):
        self.calls.append((text, voice))
        if self.broken:
            raise TTSUnavailable("cannot reach the server")
        yield AudioChunk(np.full(800, 1000, np.int16), 16000, text=text)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def say(catalog, *args, **kwargs) -> list[str]:
    return [chunk.text async for chunk in catalog.stream(*args, **kwargs)]


def test_voices_list_each_with_its_backend_default_and_fallback():
    catalog = VoiceCatalog({"edge": ("edge", Engine("aria", "xiaoxiao")), "fallback": ("piper", Engine("joe"))},
                           fallback="fallback")
    assert catalog.voices() == [
        {"id": "aria", "language": "en-US", "backend": "edge", "engine": "edge", "default": True, "fallback": False},
        {"id": "xiaoxiao", "language": "en-US", "backend": "edge", "engine": "edge", "default": False, "fallback": False},
        {"id": "joe", "language": "en-US", "backend": "piper", "engine": "fallback", "default": False, "fallback": True},
    ]


def test_a_voice_id_offered_twice_is_refused_at_start():
    with pytest.raises(ValueError, match="'joe' is offered by TTS engines 'a' and 'b'"):
        VoiceCatalog({"a": ("piper", Engine("joe")), "b": ("edge", Engine("joe"))}, fallback=None)


async def test_voices_route_to_their_engine_and_unknown_ones_are_refused():
    edge, piper = Engine("aria"), Engine("joe")
    catalog = VoiceCatalog({"edge": ("edge", edge), "piper": ("piper", piper)}, fallback="piper")
    assert await say(catalog, "Hi.") == ["Hi."] and edge.calls == [("Hi.", None)]
    assert await say(catalog, "Yo.", "joe") == ["Yo."] and piper.calls == [("Yo.", "joe")]
    assert await say(catalog, "Oh.", "aria", fallback=True) == ["Oh."] and piper.calls[-1] == ("Oh.", None)
    with pytest.raises(ValueError, match="unknown voice 'bob'"):
        await say(catalog, "Hi.", "bob")


async def test_a_failed_engine_rests_doubling_and_a_success_resets_it():
    clock, edge = Clock(), Engine("aria")
    catalog = VoiceCatalog({"edge": ("edge", edge)}, fallback=None, retry_after_s=10, max_retry_after_s=25, clock=clock)
    edge.broken = True
    with pytest.raises(TTSUnavailable, match="cannot reach"):
        await say(catalog, "One.")
    for text in ("Two.", "Three."):  # no retry storm: refused without a call
        with pytest.raises(TTSUnavailable, match=r"resting after a failure \(cannot reach the server\); next try in 10 s"):
            await say(catalog, text)
    assert len(edge.calls) == 1
    clock.now = 10.5
    with pytest.raises(TTSUnavailable, match="cannot reach"):
        await say(catalog, "Four.")  # tried again, failed again: 20 s now
    clock.now = 30.0
    with pytest.raises(TTSUnavailable, match="resting"):
        await say(catalog, "Five.")
    clock.now = 31.0
    edge.broken = False
    assert await say(catalog, "Six.") == ["Six."]
    edge.broken = True
    with pytest.raises(TTSUnavailable, match="cannot reach"):
        await say(catalog, "Seven.")
    clock.now = 41.5  # back to the first wait (10 s), not 25
    edge.broken = False
    assert await say(catalog, "Eight.") == ["Eight."]


def test_breaker_wait_is_capped():
    clock = Clock()
    breaker = Breaker(10, 25, clock)
    for _ in range(5):
        breaker.failed("x")
    clock.now = 25.5
    breaker.check("it")  # closed again after the cap, not 160 s


async def test_no_fallback_configured_is_said_plainly():
    catalog = VoiceCatalog({"edge": ("edge", Engine("aria"))}, fallback=None)
    with pytest.raises(TTSUnavailable, match=r"no fallback voice is configured \(tts.fallback\)"):
        await say(catalog, "Hi.", fallback=True)


# --- the session's side: synthesized() ----------------------------------------------------

def catalog_handle(catalog: VoiceCatalog) -> FakeHandle:
    return FakeHandle("stream", catalog.stream, True)


async def sentences(*texts):
    for text in texts:
        yield text


async def test_a_failed_voice_hands_this_and_later_sentences_to_the_fallback_once():
    edge, piper = Engine("aria"), Engine("joe")
    edge.broken = True
    tts = catalog_handle(VoiceCatalog({"edge": ("edge", edge), "piper": ("piper", piper)}, fallback="piper"))
    failures: list[StageFailed] = []
    said = [c.text async for c in synthesized(sentences("One.", "Two."), tts, "aria", 1.0, on_fallback=failures.append)]
    assert said == ["One.", "Two."]  # nothing lost: the failed sentence is said by the fallback
    assert len(failures) == 1 and failures[0].stage == "tts" and "cannot reach" in str(failures[0])
    assert edge.calls == [("One.", "aria")]  # the failed voice is not asked again this reply
    assert piper.calls == [("One.", None), ("Two.", None)]


async def test_without_a_fallback_the_failure_ends_the_reply():
    edge = Engine("aria")
    edge.broken = True
    tts = catalog_handle(VoiceCatalog({"edge": ("edge", edge)}, fallback=None))
    with pytest.raises(StageFailed, match="speech synthesis failed: cannot reach"):
        [c async for c in synthesized(sentences("One."), tts, None, 1.0)]


async def test_a_failing_fallback_ends_the_reply():
    edge, piper = Engine("aria"), Engine("joe")
    edge.broken = piper.broken = True
    tts = catalog_handle(VoiceCatalog({"edge": ("edge", edge), "piper": ("piper", piper)}, fallback="piper"))
    failures: list = []
    with pytest.raises(StageFailed):
        [c async for c in synthesized(sentences("One."), tts, None, 1.0, on_fallback=failures.append)]
    assert len(failures) == 1


# --- word timings and the mouth -----------------------------------------------------------

def test_the_mouth_rests_between_words_even_where_the_audio_is_loud():
    rate = 16000
    loud = (np.sin(2 * np.pi * 200 * np.arange(rate) / rate) * 12000).astype(np.int16)  # 1 s of "ah"
    words = [WordSpan("one", 0, 6400), WordSpan("two", 9600, 16000)]  # 0.4 s gap from 0.4 to 0.6 s
    track = VisemeTrack()
    track.push(AudioChunk(loud, rate, words=words))
    visemes = track.visemes(0, 25)
    assert visemes[11:14] == ["X", "X", "X"]  # frames 10-14 sit in the gap
    assert all(v != "X" for v in visemes[:9] + visemes[16:])
    plain = VisemeTrack()
    plain.push(AudioChunk(loud, rate))
    assert "X" not in plain.visemes(0, 25)  # without timings the audio alone decides


def test_the_default_fallback_shares_an_engine_of_its_backend():
    """configs/gpu.yaml runs Piper with options (device: auto): the default fallback (Piper,
    no options) is that engine, not a second one offering the same voices."""
    from serve_app.config import TTSSettings, load_profile

    gpu = load_profile("configs/gpu.yaml").tts
    assert gpu.options and list(gpu.all_engines()) == ["piper"] and gpu.fallback_engine() == "piper"
    edge = TTSSettings(backend="edge", options={"voices": ["en-US-AriaNeural"]})
    assert list(edge.all_engines()) == ["edge", "fallback"] and edge.fallback_engine() == "fallback"
    own = TTSSettings(fallback={"backend": "piper", "options": {"voice_name": "backup"}}, options={"device": "cpu"})
    assert list(own.all_engines()) == ["piper", "fallback"]  # a fallback with options of its own stays apart
