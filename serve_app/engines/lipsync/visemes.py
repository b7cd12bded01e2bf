"""Visemes (mouth shapes, see ``base.VISEMES``) per 40 ms video frame.

From phoneme timings when the TTS gives them (``visemes_from_phonemes``, ``VisemeTrack``), or
from the audio itself when it does not (``visemes_from_audio``).
"""
from __future__ import annotations

import bisect
import math
import unicodedata

import numpy as np

from ..audio import to_float32
from ..tts.base import AudioChunk, PhonemeSpan
from .base import SPEECH_RATE, FPS, VISEMES

# espeak IPA as Piper emits it (one code point per phoneme; a merged cluster such as "aɪ" or
# "tʃ" takes the shape of its first sound). Letters not listed fall back to "B".
_VISEME_OF = {
    **dict.fromkeys("pbm", "A"),
    **dict.fromkeys("iɪeᵻɨ", "B"),
    **dict.fromkeys("ɛæʌəɐɜɵ", "C"),
    **dict.fromkeys("ɑaɒ", "D"),
    **dict.fromkeys("ɔɚɝœ", "E"),
    **dict.fromkeys("uʊowøyɥ", "F"),
    **dict.fromkeys("fv", "G"),
    **dict.fromkeys("lɫɬɭʎ", "H"),
}
_REST = set(" ^$_")  # word gap, Piper's begin/end markers, padding
_STRESS = set("ˈˌ")
_LINKS = set("‿")  # ties that unicode files as punctuation

_X = VISEMES.index("X")
_A = VISEMES.index("A")
_A_PRIORITY = 0.3  # a lip closure covering this much of a frame wins it, so P/B/M show


def phoneme_to_viseme(ph: str) -> str | None:
    """The viseme of one Piper phoneme; None for a modifier (stress, length, tie, diacritic)."""
    for ch in ph:
        if ch in _REST:
            return "X"
        if ch in _LINKS or unicodedata.category(ch) in ("Lm", "Mn", "Sk"):
            continue
        return _VISEME_OF.get(ch, "B" if ch.isalpha() else "X")
    return None


def _phoneme_runs(spans: list[PhonemeSpan]) -> list[tuple[str, int]]:
    """(viseme, num_samples) runs, with modifiers' time given to the sound they modify.

    Piper's span for a stress mark is already the stressed vowel sounding, and a word gap inside
    a phrase holds the onset of the next word, so both go forward; length marks and other
    diacritics extend the previous sound. A gap after punctuation is a real pause: rest.
    """
    runs: list[tuple[str, int]] = []
    carry = 0  # samples owed to the next sound
    for span in spans:
        v = phoneme_to_viseme(span.phoneme)
        n = int(span.num_samples)
        if v is None and span.phoneme and span.phoneme[0] in _STRESS:
            carry += n
        elif v is None and runs:
            runs[-1] = (runs[-1][0], runs[-1][1] + n)
        elif v is None or (span.phoneme == " " and runs and runs[-1][0] != "X"):
            carry += n
        else:
            runs.append((v, n + carry))
            carry = 0
    if carry:
        runs.append(("X", carry))
    return runs


def _pick(segments: list[tuple[float, float, str]], first_frame: int, n_frames: int) -> list[str]:
    """For each frame from ``first_frame`` on, the viseme covering most of it (closures first).

    ``segments`` are (start_s, end_s, viseme), sorted and not overlapping; time that no segment
    covers counts as rest. Frame windows come from integer frame indices, so asking for a range
    piecewise gives the same answer as asking for it whole.
    """
    frame = 1.0 / FPS
    cover = np.zeros((n_frames, len(VISEMES)))
    t0, t_end = first_frame * frame, (first_frame + n_frames) * frame
    first = bisect.bisect_right([s[1] for s in segments], t0)
    for start, end, v in segments[first:]:
        if start >= t_end:
            break
        f0 = max(0, math.floor(start * FPS) - first_frame)
        f1 = min(n_frames, math.ceil(end * FPS) - first_frame)
        for f in range(f0, f1):
            w0, w1 = (first_frame + f) * frame, (first_frame + f + 1) * frame
            cover[f, VISEMES.index(v)] += max(0.0, min(end, w1) - max(start, w0))
    cover[:, _X] += frame - cover.sum(axis=1)
    best = cover.argmax(axis=1)
    best[cover[:, _A] >= _A_PRIORITY * frame] = _A
    return [VISEMES[i] for i in best]


def _runs_to_segments(
    runs: list[tuple[str, int]], sample_rate: int, t0: float
) -> list[tuple[float, float, str]]:
    segments = []
    pos = 0
    for v, n in runs:
        segments.append((t0 + pos / sample_rate, t0 + (pos + n) / sample_rate, v))
        pos += n
    return segments


def visemes_from_phonemes(
    spans: list[PhonemeSpan], sample_rate: int, n_frames: int, start_sample: int = 0
) -> list[str]:
    """One viseme per video frame; frame 0 starts at ``start_sample`` of the spans' audio.

    Frames past the end of the spans are rest ("X").
    """
    segments = _runs_to_segments(_phoneme_runs(spans), sample_rate, -start_sample / sample_rate)
    return _pick(segments, 0, n_frames)


def _audio_runs(chunk: AudioChunk) -> list[tuple[str, int]]:
    """(viseme, num_samples) per 40 ms of a chunk that came without phoneme timings; with
    word timings, the mouth rests wherever a frame's middle falls between two words."""
    per_frame = chunk.sample_rate // FPS
    n = len(chunk.samples)
    audio = to_float32(chunk.samples)
    labels = visemes_from_audio(audio, math.ceil(n / per_frame), chunk.sample_rate)
    gaps = _word_gaps(chunk)
    for i in range(len(labels)):
        middle = i * per_frame + per_frame // 2
        if any(start <= middle < end for start, end in gaps):
            labels[i] = "X"
    return [(v, min(per_frame, n - i * per_frame)) for i, v in enumerate(labels)]


def _word_gaps(chunk: AudioChunk) -> list[tuple[int, int]]:
    """(start, end) samples between consecutive words of the chunk."""
    words = sorted(chunk.words or [], key=lambda w: w.start)
    return [(a.end, b.start) for a, b in zip(words, words[1:]) if b.start > a.end]


class VisemeTrack:
    """Visemes for a stream of TTS chunks, in frames counted from the first chunk's start.

    Push each chunk as it arrives, then ask for the frames being rendered. Chunks without
    phoneme timings get visemes from their audio, so the timeline never has holes.
    """

    def __init__(self) -> None:
        self._segments: list[tuple[float, float, str]] = []
        self._end = 0.0  # seconds of audio pushed so far

    @property
    def duration_s(self) -> float:
        return self._end

    def push(self, chunk: AudioChunk) -> None:
        rate = chunk.sample_rate
        runs = _phoneme_runs(chunk.phonemes) if chunk.phonemes is not None else _audio_runs(chunk)
        self._segments += _runs_to_segments(runs, rate, self._end)
        self._end += len(chunk.samples) / rate

    def visemes(self, frame_start: int, n_frames: int) -> list[str]:
        return _pick(self._segments, frame_start, n_frames)


# visemes_from_audio thresholds, fitted to frames of peak-normalised TTS speech labelled by
# Piper's phoneme timings (vowels sit at about -8 to -20 dBFS, nasals -16 to -26, hiss -20 to -35).
_SILENCE_DB = -45.0
_QUIET_DB = -30.0  # below this: a weak consonant or a voiced closure, never an open vowel
_HUM_DB = -16.0  # a nearly all-bass frame quieter than this is lips-closed humming (m n)
_OPEN_DB = -24.0
_WIDE_DB = -12.0
_HISS_HZ = 1800.0  # spectral centroid above this: s, sh, f, th (teeth together)
_SPREAD_RATIO = 0.02  # share of power at 1.5-4 kHz above this: i, e, s (spread lips)
_HUM_RATIO = 0.9  # share of power below 400 Hz above this: nasal murmur
_ROUND_RATIO = 0.5  # ... above this in a voiced frame: u, o, w (puckered)
_HALF_ROUND_RATIO = 0.3  # ... above this: ɔ, ɚ (rounded)


def visemes_from_audio(
    audio: np.ndarray, n_frames: int, sample_rate: int = SPEECH_RATE
) -> list[str]:
    """Visemes from mono float audio alone: loudness sets openness, spectrum sets shape.

    ``audio`` is cut or zero-padded to ``n_frames`` frames of ``sample_rate / FPS`` samples.
    """
    per_frame = sample_rate // FPS
    x = np.zeros(n_frames * per_frame, np.float32)
    m = min(len(x), len(audio))
    x[:m] = audio[:m]
    frames = x.reshape(n_frames, per_frame)

    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    power = np.abs(np.fft.rfft(frames * np.hanning(per_frame), axis=1)) ** 2
    freqs = np.fft.rfftfreq(per_frame, 1.0 / sample_rate)
    total = power.sum(axis=1) + 1e-20
    centroid = (power * freqs).sum(axis=1) / total
    bass = power[:, freqs < 400].sum(axis=1) / total
    spread = power[:, (freqs >= 1500) & (freqs < 4000)].sum(axis=1) / total

    out = []
    for level, cen, low, high in zip(db, centroid, bass, spread, strict=True):
        if level < _SILENCE_DB:
            out.append("X")
        elif cen > _HISS_HZ or high > _SPREAD_RATIO:
            out.append("B")
        elif level < _QUIET_DB:
            out.append("A" if low > _HUM_RATIO else "B")
        elif low > _HUM_RATIO and level < _HUM_DB:
            out.append("A")
        elif low > _ROUND_RATIO:
            out.append("F")
        elif low > _HALF_ROUND_RATIO:
            out.append("E")
        elif level >= _WIDE_DB:
            out.append("D")
        else:
            out.append("C" if level >= _OPEN_DB else "B")
    return out
