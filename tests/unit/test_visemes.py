from __future__ import annotations

import time

import numpy as np
import pytest

from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME, VISEMES
from serve_app.engines.lipsync.visemes import (
    VisemeTrack,
    phoneme_to_viseme,
    visemes_from_audio,
    visemes_from_phonemes,
)
from serve_app.engines.tts.base import AudioChunk, PhonemeSpan

RATE = 16_000
F = SAMPLES_PER_FRAME  # 640 samples = one 40 ms frame at 16 kHz


def spans(*pairs: tuple[str, float]) -> list[PhonemeSpan]:
    """Spans from (phoneme, length in frames) pairs."""
    return [PhonemeSpan(p, round(n * F)) for p, n in pairs]


EXPECTED = {
    **dict.fromkeys(["m", "p", "b"], "A"),
    **dict.fromkeys(["s", "ɡ", "i", "tʃ"], "B"),
    **dict.fromkeys(["ɛ", "ə"], "C"),
    **dict.fromkeys(["ɑ", "aɪ"], "D"),
    **dict.fromkeys(["ɔ", "ɚ"], "E"),
    **dict.fromkeys(["u", "w"], "F"),
    **dict.fromkeys(["f", "v"], "G"),
    "l": "H",
    **dict.fromkeys([" ", "^", "$", ".", ",", "?"], "X"),
    **dict.fromkeys(["ˈ", "ˌ", "ː", "ʲ", "\u0361"], None),  # modifiers
}


@pytest.mark.parametrize("ph,viseme", EXPECTED.items())
def test_phoneme_to_viseme(ph, viseme):
    assert phoneme_to_viseme(ph) == viseme


def test_frames_follow_spans_and_end_at_rest():
    s = spans(("^", 1), ("m", 2), ("ɑ", 3), ("f", 1), ("u", 2), (".", 1))
    assert visemes_from_phonemes(s, RATE, 12) == list("XAADDDGFFXXX")


def test_start_sample_offsets_the_frames_and_rate_is_respected():
    s = spans(("m", 2), ("ɑ", 3), ("l", 2))
    assert visemes_from_phonemes(s, RATE, 4, start_sample=2 * F) == list("DDDH")
    at_22k = [PhonemeSpan(p.phoneme, p.num_samples * 22050 // RATE) for p in s]
    assert visemes_from_phonemes(at_22k, 22050, 7) == list("AADDDHH")


def test_majority_wins_but_short_closures_show():
    s = spans(("ɑ", 1.6), ("p", 0.35), ("ɑ", 2.05))
    assert visemes_from_phonemes(s, RATE, 4) == list("DADD")
    s = spans(("ɑ", 1.75), ("p", 0.2), ("ɑ", 2.05))  # too short to see
    assert visemes_from_phonemes(s, RATE, 4) == list("DDDD")


def test_modifiers_join_the_sound_they_belong_to():
    # Piper's stress-mark span is the stressed vowel already sounding; a length mark extends.
    s = spans(("m", 1), ("ˈ", 1), ("ɑ", 1), ("ː", 1), ("ɹ", 1))
    assert visemes_from_phonemes(s, RATE, 5) == list("ADDDB")
    # A word gap inside a phrase is the next word's onset; after punctuation it is a pause.
    s = spans(("ɑ", 1), (" ", 1), ("m", 1), ("ɑ", 1), (",", 1), (" ", 1), ("f", 1))
    assert visemes_from_phonemes(s, RATE, 7) == list("DAADXXG")


async def _piper_chunks(text: str) -> list[AudioChunk]:
    from serve_app.engines.tts.piper_tts import PiperTTS

    return [c async for c in PiperTTS().stream(text)]


@pytest.mark.asyncio
async def test_real_piper_speech_shows_closures_and_moves_while_speaking():
    (chunk,) = await _piper_chunks("Mama made more bread")
    per_frame = chunk.sample_rate // 25
    n = len(chunk.samples) // per_frame
    vis = visemes_from_phonemes(chunk.phonemes, chunk.sample_rate, n)
    assert len(vis) == n and set(vis) <= set(VISEMES)
    assert vis.count("A") >= 3  # four M/B closures
    frames = chunk.samples[: n * per_frame].reshape(n, per_frame) / 32768.0
    loud = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-12) > -30
    speaking = [v for v, is_loud in zip(vis, loud, strict=True) if is_loud]
    assert speaking.count("X") <= len(speaking) // 10
    assert {"D", "E"} & set(speaking)  # "ma", "more" open the mouth


def _vowel(seconds: float, rms_db: float) -> np.ndarray:
    """A buzz at 200 Hz shaped by formants near 700 and 1200 Hz, like an open "ah"."""
    t = np.arange(int(RATE * seconds)) / RATE
    x = np.zeros_like(t)
    for k in range(1, 40):
        f = 200 * k
        weight = np.exp(-(((f - 700) / 250) ** 2)) + 0.7 * np.exp(-(((f - 1200) / 250) ** 2))
        x += weight * np.sin(2 * np.pi * f * t + k)
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (rms_db / 20)).astype(np.float32)


def test_audio_silence_is_rest():
    n = 10
    assert set(visemes_from_audio(np.zeros(n * F, np.float32), n)) <= {"X", "A"}
    quiet = np.random.default_rng(1).standard_normal(n * F).astype(np.float32) * 1e-4
    assert set(visemes_from_audio(quiet, n)) <= {"X", "A"}


def test_audio_loud_vowel_opens_wider_than_a_soft_one():
    loud = visemes_from_audio(_vowel(0.4, -10), 10)
    assert set(loud) == {"D"}
    soft = visemes_from_audio(_vowel(0.4, -20), 10)
    assert set(soft) == {"C"}


def test_audio_hiss_is_teeth():
    noise = np.random.default_rng(2).standard_normal(10 * F).astype(np.float32) * 0.05
    assert visemes_from_audio(noise, 10) == ["B"] * 10


def test_audio_length_handling_and_speed():
    vowel = _vowel(1.0, -10)
    assert visemes_from_audio(vowel[:1000], 5) == visemes_from_audio(
        np.concatenate([vowel[:1000], np.zeros(5 * F - 1000, np.float32)]), 5
    )
    assert len(visemes_from_audio(vowel, 10)) == 10  # longer audio is cut
    started = time.perf_counter()
    visemes_from_audio(vowel, 25)
    assert (time.perf_counter() - started) / 25 < 1e-3


def test_track_is_continuous_across_chunks():
    first = spans(("^", 0.5), ("m", 1.3), ("ɑ", 2.2), ("$", 0.5))  # ends mid-frame
    second = spans(("^", 0.5), ("f", 1.3), ("u", 2.4), ("l", 1.3), ("$", 1.0))
    track = VisemeTrack()
    for s in (first, second):
        track.push(AudioChunk(np.zeros(sum(p.num_samples for p in s), np.int16), RATE, s))
    whole = visemes_from_phonemes(first + second, RATE, 14)
    assert track.visemes(0, 14) == whole
    assert track.visemes(0, 5) + track.visemes(5, 9) == whole  # renderer asks piecewise
    assert track.duration_s == pytest.approx((4.5 + 6.5) / 25)
    assert track.visemes(14, 3) == list("XXX")


def test_track_falls_back_to_audio_for_chunks_without_timings():
    track = VisemeTrack()
    track.push(AudioChunk(np.zeros(2 * F, np.int16), RATE, spans(("m", 2))))
    hiss = (np.random.default_rng(3).standard_normal(3 * F) * 0.05 * 32767).astype(np.int16)
    track.push(AudioChunk(hiss, RATE, None))
    assert track.visemes(0, 5) == list("AABBB")
