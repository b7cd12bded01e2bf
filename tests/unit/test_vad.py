"""VAD engines and the utterance detector, on real (Piper) speech and on synthetic signals."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve_app.engines.audio import StreamResampler
from serve_app.engines.tts.piper_tts import PiperTTS
from serve_app.engines.vad import (
    SpeechEnd,
    SpeechStart,
    UtteranceDetector,
    create_vad_engine,
)
from serve_app.engines.vad.energy import EnergyVAD
from serve_app.engines.vad.silero import SileroVAD

SR = 16_000
PIECE = 320  # 20 ms, what the WebRTC mic path delivers
TOL_S = 0.15
SENTENCES = [
    "Hello there, how are you doing today?",
    "I would like to order a large pizza with extra cheese.",
    "The weather has been lovely this week, so we went for a long walk.",
    "Could you remind me to call my sister tomorrow morning?",
]


def _speech_extent(x: np.ndarray, floor_db: float = -40.0) -> tuple[int, int]:
    """First and last sample of the 10 ms windows louder than ``floor_db``."""
    win = 160
    n = len(x) // win
    rms = np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(rms + 1e-12) > floor_db)
    return int(loud[0]) * win, (int(loud[-1]) + 1) * win


async def _synthesize(tts: PiperTTS, text: str) -> np.ndarray:
    resampler = StreamResampler(tts.sample_rate, SR)
    parts = [resampler.push(c.samples) async for c in tts.stream(text)]
    return np.concatenate(parts + [resampler.flush()])


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Each sentence as float32 16 kHz, trimmed to where the voice is: true extent = the clip."""

    async def make() -> list[np.ndarray]:
        tts = PiperTTS()
        return [await _synthesize(tts, s) for s in SENTENCES]

    clips = []
    for x in asyncio.run(make()):
        a, b = _speech_extent(x)
        clips.append(x[a:b])
    return clips


@pytest.fixture(scope="module")
def silero() -> SileroVAD:
    return SileroVAD()


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), np.float32)


def _tone(seconds: float, level_db: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    amp = np.sqrt(2) * 10 ** (level_db / 20)  # a sine's RMS is amp / sqrt(2)
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _layout(*parts: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate; returns the stream and the (start, end) seconds of each odd part."""
    spans, pos = [], 0
    for i, p in enumerate(parts):
        if i % 2:
            spans.append((pos / SR, (pos + len(p)) / SR))
        pos += len(p)
    return np.concatenate(parts), spans


def _run(det: UtteranceDetector, stream: np.ndarray, piece: int = PIECE):
    """Push in pieces; returns [(stream time when emitted, event)]."""
    out = []
    for i in range(0, len(stream), piece):
        chunk = stream[i : i + piece]
        out += [((i + len(chunk)) / SR, e) for e in det.push(chunk)]
    return out


def _check_utterance(start, end, stream, det, span, pre_roll_s=0.2, tail_s=0.1):
    """One SpeechStart/SpeechEnd pair against the true speech span and the stream itself."""
    (t_start_emit, s), (t_end_emit, e) = start, end
    assert isinstance(s, SpeechStart) and isinstance(e, SpeechEnd) and not e.truncated
    assert abs(s.t_s - span[0]) < TOL_S and s.t_s == e.t_start_s
    assert abs(e.t_end_s - span[1]) < TOL_S
    # Emitted when the rules say: start_delay_s after onset, detection_delay_s after the end
    # (plus at most one VAD frame + one piece of buffering).
    slack = (det.vad.frame_samples + PIECE) / SR
    assert -1e-9 <= t_start_emit - (s.t_s + det.start_delay_s) <= slack
    assert -1e-9 <= t_end_emit - (e.t_end_s + det.detection_delay_s) <= slack
    # The audio is exactly the stream from pre-roll before the onset to the tail after the end.
    a, b = round((s.t_s - pre_roll_s) * SR), round((e.t_end_s + tail_s) * SR)
    assert e.audio.dtype == np.float32
    np.testing.assert_array_equal(e.audio, stream[a:b])


def test_silero_finds_two_utterances_at_their_true_boundaries(speech, silero):
    stream, spans = _layout(
        _silence(1.0), speech[0], _silence(1.5), speech[1], _silence(1.0)
    )
    det = UtteranceDetector(silero)
    events = _run(det, stream)
    assert [type(e).__name__ for _, e in events] == ["SpeechStart", "SpeechEnd"] * 2
    for k, span in enumerate(spans):
        _check_utterance(events[2 * k], events[2 * k + 1], stream, det, span)
    errors = [
        (round(e.t_s - span[0], 3) if isinstance(e, SpeechStart) else round(e.t_end_s - span[1], 3))
        for (_, e), span in zip(events, [spans[0], spans[0], spans[1], spans[1]])
    ]
    print(f"\nSilero boundary errors (s): onset/end {errors}")


def _noise(seconds: float, level_db: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(round(seconds * SR)) * 10 ** (level_db / 20)).astype(np.float32)


@pytest.mark.parametrize(
    "name, signal",
    [
        ("silence", lambda: _silence(5.0)),
        ("white noise -30 dBFS", lambda: _noise(5.0, -30.0)),
        ("50 Hz hum -20 dBFS", lambda: _tone(5.0, -20.0, freq=50.0)),
        ("30 ms click", lambda: _layout(_silence(1.0), _noise(0.03, -6.0), _silence(1.0))[0]),
    ],
)
def test_silero_ignores_what_is_not_speech(silero, name, signal):
    assert _run(UtteranceDetector(silero), signal()) == [], name


def test_continuous_speech_is_cut_at_max_utterance(speech, silero):
    gap = _silence(0.15)  # pauses between sentences, well under end_silence_ms
    parts = [_silence(1.0)]
    while sum(len(p) for p in parts) < 31 * SR:
        for clip in speech:
            parts += [clip, gap]
    talk = np.concatenate(parts[1:])[: 30 * SR]
    stream = np.concatenate([_silence(1.0), talk, _silence(1.0)])
    det = UtteranceDetector(silero, max_utterance_s=8.0)
    events = [e for _, e in _run(det, stream)]
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd] * 4
    assert [e.truncated for e in ends] == [True, True, True, False]
    assert abs(starts[0].t_s - 1.0) < TOL_S
    # The talk is cut at 30 s, which can fall in a 0.15 s gap (Piper's clip lengths vary run to
    # run): the last utterance ends where the voice does.
    voice_end_s = 1.0 + _speech_extent(talk)[1] / SR
    assert abs(ends[-1].t_end_s - voice_end_s) < TOL_S
    frame_s = silero.frame_samples / SR
    for s, e, nxt in zip(starts, ends, starts[1:]):
        assert 8.0 - 1e-9 <= e.t_end_s - e.t_start_s < 8.0 + frame_s
        assert e.t_start_s == s.t_s
        # the next utterance picks up at the cut (or at the next word), with no overlap
        assert e.t_end_s <= nxt.t_s < e.t_end_s + 0.5
    # pre-roll never reaches back past the previous cut: no audio is given twice
    assert len(ends[0].audio) == round((ends[0].t_end_s - starts[0].t_s + 0.2) * SR)
    for prev, s, e in zip(ends, starts[1:], ends[1:3]):
        audio_start = max(prev.t_end_s, s.t_s - 0.2)
        assert len(e.audio) == round((e.t_end_s - audio_start) * SR)


def test_silero_rejects_wrong_frame_size(silero):
    with pytest.raises(ValueError, match="512"):
        silero.probability(np.zeros(320, np.float32))


def test_energy_vad_hears_a_loud_tone_and_not_silence():
    vad = EnergyVAD()
    assert vad.probability(_tone(0.032, -20.0)[: vad.frame_samples]) > 0.99
    assert vad.probability(_silence(0.032)[: vad.frame_samples]) < 0.01
    assert vad.probability(_tone(0.032, -40.0)[: vad.frame_samples]) == pytest.approx(0.5, abs=0.02)


def test_detector_boundaries_are_exact_on_a_tone():
    """With the (deterministic) energy VAD the frame arithmetic can be checked exactly."""
    stream, [span] = _layout(_silence(1.0), _tone(1.0, -20.0), _silence(1.0))
    det = UtteranceDetector(EnergyVAD())
    events = _run(det, stream)
    assert len(events) == 2
    n = 512 / SR
    # onset: the frame holding the tone's first sample; end: the frame holding its last
    assert events[0][1].t_s == pytest.approx(np.floor(span[0] / n) * n)
    assert events[1][1].t_end_s == pytest.approx(np.ceil(span[1] / n) * n)
    _check_utterance(events[0], events[1], stream, det, span)


def test_piece_size_does_not_matter():
    stream, _ = _layout(
        _silence(0.7), _tone(0.5, -20.0), _silence(0.9), _tone(1.3, -25.0), _silence(0.6)
    )
    by_piece = []
    for piece in (PIECE, 1, 4096, len(stream)):
        events = [e for _, e in _run(UtteranceDetector(EnergyVAD()), stream, piece)]
        by_piece.append([(type(e), vars(e).get("t_s"), vars(e).get("t_end_s")) for e in events])
    assert len(by_piece[0]) == 4
    assert all(b == by_piece[0] for b in by_piece)


def test_blips_shorter_than_min_speech_are_ignored():
    det = UtteranceDetector(EnergyVAD(), min_speech_ms=160)
    blips, _ = _layout(
        _silence(0.5), _noise(0.03, -6.0), _silence(0.5), _tone(0.1, -20.0), _silence(0.5)
    )
    assert _run(det, blips) == []
    # the same blips count when no minimum is asked for: it is min_speech_ms that drops them
    eager = [type(e) for _, e in _run(UtteranceDetector(EnergyVAD(), min_speech_ms=0), blips)]
    assert eager == [SpeechStart, SpeechEnd] * 2
    long_enough, [span] = _layout(_silence(0.5), _tone(0.25, -20.0), _silence(0.6))
    events = _run(det, long_enough)
    assert [type(e) for _, e in events] == [SpeechStart, SpeechEnd]


def test_hysteresis_keeps_speech_between_the_thresholds():
    # -41 dB gives p ~= 0.42 with the energy VAD: below start (0.5), above end (0.35)
    between = _tone(1.0, -41.0)
    assert _run(UtteranceDetector(EnergyVAD()), np.concatenate([_silence(0.5), between])) == []
    stream, _ = _layout(_silence(0.5), np.concatenate([_tone(0.3, -20.0), between]), _silence(0.6))
    events = [e for _, e in _run(UtteranceDetector(EnergyVAD()), stream)]
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    assert events[1].t_end_s == pytest.approx(1.8, abs=0.033)  # the quiet part stayed in


def test_reset_restarts_time_and_drops_a_pending_utterance():
    stream, _ = _layout(_silence(1.0), _tone(1.0, -20.0), _silence(1.0))
    det = UtteranceDetector(EnergyVAD())
    fresh = [e for _, e in _run(UtteranceDetector(EnergyVAD()), stream)]
    det.push(stream[: round(1.5 * SR)])  # mid-utterance
    det.reset()
    again = [e for _, e in _run(det, stream)]
    assert [(type(e), vars(e).get("t_s")) for e in again] == [
        (type(e), vars(e).get("t_s")) for e in fresh
    ]
    np.testing.assert_array_equal(again[1].audio, fresh[1].audio)


def test_detector_rejects_int16_and_bad_settings():
    det = UtteranceDetector(EnergyVAD())
    with pytest.raises(ValueError, match="float"):
        det.push(np.zeros(512, np.int16))
    with pytest.raises(ValueError, match="threshold"):
        UtteranceDetector(EnergyVAD(), start_threshold=0.3, end_threshold=0.5)
    with pytest.raises(ValueError, match="max_utterance_s"):
        UtteranceDetector(EnergyVAD(), max_utterance_s=0.1)


def test_registry():
    assert isinstance(create_vad_engine("energy", threshold_db=-30.0), EnergyVAD)
    assert isinstance(create_vad_engine("silero"), SileroVAD)
    with pytest.raises(ValueError, match=r"'energy', 'silero'"):
        create_vad_engine("webrtc")
