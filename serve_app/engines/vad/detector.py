"""Turn a 16 kHz mic stream into user utterances, on top of any VADEngine.

Times are stream times: seconds of audio pushed since the start (or the last ``reset()``), so
they are exact and independent of how late or in what pieces the audio arrives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .base import SAMPLE_RATE, VADEngine

_TAIL_MS = 100  # audio kept after the last speech frame: softly ending consonants, ASR context


@dataclass(frozen=True)
class SpeechStart:
    """Speech has lasted ``min_speech_ms``; it began at stream time ``t_s`` (the onset).

    It is emitted ``UtteranceDetector.start_delay_s`` after ``t_s`` (stream time).
    """

    t_s: float


@dataclass(frozen=True, eq=False)
class SpeechEnd:
    """One utterance, for ASR.

    ``audio`` (float32, 16 kHz) starts up to ``pre_roll_ms`` before ``t_start_s`` and runs to
    100 ms after ``t_end_s``, when speech stopped. The event is emitted
    ``UtteranceDetector.detection_delay_s`` after ``t_end_s``, once the silence is long enough.

    ``truncated``: the utterance reached ``max_utterance_s`` while speech went on; ``t_end_s``
    and the audio end at the cut. If speech goes on, the next utterance starts there with a
    SpeechStart of its own; its pre-roll never reaches back past the cut, so no audio is
    given twice.
    """

    audio: np.ndarray = field(repr=False)
    t_start_s: float
    t_end_s: float
    truncated: bool = False


VADEvent = SpeechStart | SpeechEnd


class _State(Enum):
    SILENCE = 0
    ONSET = 1  # speech seen, not yet ``min_speech_ms`` of it: may still be a blip
    SPEECH = 2  # SpeechStart emitted


class UtteranceDetector:
    """A hysteresis state machine over VAD frame probabilities.

    A frame is speech when p >= ``start_threshold``; once speaking, frames stay speech while
    p >= ``end_threshold``. Speech must run ``min_speech_ms`` without a break to count
    (coughs and clicks do not), and ends after ``end_silence_ms`` of consecutive non-speech
    frames. Durations are rounded up to whole VAD frames (32 ms for Silero).

    Memory is bounded: the current utterance (at most ``pre_roll_ms + max_utterance_s``) and a
    ``pre_roll_ms`` ring of the audio before it.
    """

    def __init__(
        self,
        vad: VADEngine,
        *,
        start_threshold: float = 0.5,
        end_threshold: float = 0.35,
        min_speech_ms: float = 160,
        end_silence_ms: float = 400,
        max_utterance_s: float = 20.0,
        pre_roll_ms: float = 200,
    ) -> None:
        if not 0.0 < end_threshold <= start_threshold <= 1.0:
            raise ValueError(
                f"Need 0 < end_threshold <= start_threshold <= 1, "
                f"got end_threshold={end_threshold}, start_threshold={start_threshold}"
            )
        if end_silence_ms <= 0 or min(min_speech_ms, pre_roll_ms) < 0:
            raise ValueError("Need end_silence_ms > 0, min_speech_ms >= 0 and pre_roll_ms >= 0")
        if max_utterance_s * 1000 <= min_speech_ms:
            raise ValueError(f"max_utterance_s={max_utterance_s} leaves no room for min_speech_ms")
        self.vad = vad
        self.start_threshold = start_threshold
        self.end_threshold = end_threshold
        n = vad.frame_samples
        self._frame = n
        # in samples, rounded up to whole frames where they are counted in frames; a start
        # needs at least the one frame that heard it
        self._min_speech = max(1, math.ceil(_samples(min_speech_ms / 1000) / n)) * n
        self._end_silence = math.ceil(_samples(end_silence_ms / 1000) / n) * n
        self._max_utterance = _samples(max_utterance_s)
        self._pre_roll = _samples(pre_roll_ms / 1000)
        self._tail = min(_samples(_TAIL_MS / 1000), self._end_silence)
        self.reset()

    @property
    def start_delay_s(self) -> float:
        """How long after the onset (``SpeechStart.t_s``) the SpeechStart is emitted."""
        return self._min_speech / SAMPLE_RATE

    @property
    def detection_delay_s(self) -> float:
        """How long after speech stops (``SpeechEnd.t_end_s``) the SpeechEnd is emitted.

        This is ``end_silence_ms`` rounded up to whole VAD frames: the price of not cutting
        the user off at every pause, paid on every turn before ASR can start.
        """
        return self._end_silence / SAMPLE_RATE

    def reset(self) -> None:
        """Start a new stream: time 0, no utterance, fresh VAD state."""
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)  # less than one frame, waiting for more
        self._pos = 0  # stream sample index of the next frame
        self._ring = np.zeros(0, np.float32)  # the last pre_roll samples before ``_pos``
        self._state = _State.SILENCE
        self._chunks: list[np.ndarray] = []  # utterance audio so far, pre-roll first
        self._audio_start = 0
        self._onset = 0
        self._voiced_end = 0  # end of the last speech frame
        self._run = 0  # ONSET: samples of unbroken speech; SPEECH: of unbroken silence

    # --- live state, for acting before an event is certain -------------------------------
    @property
    def phase(self) -> str:
        """"silence", "onset" (speech heard, not yet ``min_speech_ms`` of it) or "speech"."""
        return self._state.name.lower()

    @property
    def silence_s(self) -> float:
        """In an utterance: how long the current pause has lasted so far (0 while voiced)."""
        return self._run / SAMPLE_RATE if self._state is _State.SPEECH else 0.0

    def utterance_audio(self) -> np.ndarray:
        """The utterance so far, cut as a SpeechEnd now would cut it: lets a caller start
        transcribing during a pause, before the end-of-speech silence has fully elapsed."""
        audio_end = min(self._voiced_end + self._tail, self._pos)
        return np.concatenate(self._chunks)[: audio_end - self._audio_start]

    def push(self, audio: np.ndarray) -> list[VADEvent]:
        """Feed the next piece of the stream (float32 in [-1, 1], 16 kHz, any length).

        Returns the events the completed VAD frames produced, in stream order.
        """
        x = np.asarray(audio)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"UtteranceDetector takes float samples in [-1, 1], got {x.dtype}")
        buf = np.concatenate([self._pending, x.astype(np.float32, copy=False).reshape(-1)])
        n = self._frame
        events: list[VADEvent] = []
        used = 0
        while len(buf) - used >= n:
            frame = buf[used : used + n]
            used += n
            event = self._step(frame, self.vad.probability(frame))
            if event is not None:
                events.append(event)
        self._pending = buf[used:].copy()
        return events

    def _step(self, frame: np.ndarray, p: float) -> VADEvent | None:
        start, end = self._pos, self._pos + self._frame
        self._pos = end
        before = self._ring  # the pre-roll of an utterance starting at this frame
        if self._pre_roll:
            self._ring = np.concatenate([before, frame])[-self._pre_roll :]
        if self._state is _State.SILENCE:
            if p < self.start_threshold:
                return None
            self._state = _State.ONSET
            self._chunks = [before]
            self._audio_start = start - len(before)
            self._onset = start
            self._run = 0
        self._chunks.append(frame.copy())
        if self._state is _State.ONSET:
            if p < self.end_threshold:  # a blip: forget it
                self._state = _State.SILENCE
                self._chunks = []
                return None
            self._run += self._frame
            self._voiced_end = end
            if self._run < self._min_speech:
                return None
            self._state = _State.SPEECH
            self._run = 0
            return SpeechStart(self._onset / SAMPLE_RATE)
        if p >= self.end_threshold:
            self._voiced_end = end
            self._run = 0
        else:
            self._run += self._frame
        if self._run >= self._end_silence:
            return self._finish(self._voiced_end, self._voiced_end + self._tail, truncated=False)
        if end - self._onset >= self._max_utterance:
            self._ring = np.zeros(0, np.float32)  # the next utterance starts at the cut
            return self._finish(end, end, truncated=True)
        return None

    def _finish(self, t_end: int, audio_end: int, truncated: bool) -> SpeechEnd:
        audio = np.concatenate(self._chunks)[: audio_end - self._audio_start]
        self._state = _State.SILENCE
        self._chunks = []
        return SpeechEnd(audio, self._onset / SAMPLE_RATE, t_end / SAMPLE_RATE, truncated)


def _samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)
