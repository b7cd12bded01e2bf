"""The session's ears: mic audio at 16 kHz -> utterances, reported to `ListenerHooks`.

Transport-neutral: the WebRTC transport pushes the decoded mic track, the WebSocket one the
client's PCM frames, both through `push`. Hands-free mode runs the VAD utterance detector
on everything heard. Push-to-talk mode ignores the VAD: the utterance is exactly what was
heard between the client's `ptt` down and up messages.

Two things are reported before the detector is sure, because every millisecond counts:
- the first voiced frame (`maybe_speech`: the avatar's speech is held at once) and a blip
  that never becomes speech (`blip`: it resumes);
- a pause inside an utterance `speculate_after_s` long (`paused`, once per pause; the turn
  controller starts replying to what was said so far) and the user talking on after it
  (`went_on`: that reply is dropped).
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from serve_app.engines.media import SPEECH_RATE
from serve_app.engines.vad.detector import SpeechEnd, SpeechStart, UtteranceDetector

MODES = ("hands_free", "push_to_talk")


class ListenerHooks(Protocol):
    """What the listener tells the session core (TurnController implements it)."""

    def maybe_speech(self) -> None: ...
    def blip(self) -> None: ...
    async def speech_started(self) -> None: ...
    def paused(self, audio: np.ndarray, ended_at: float) -> None: ...
    def went_on(self) -> None: ...
    async def utterance(self, audio: np.ndarray, ended_at: float, truncated: bool) -> None:
        """`ended_at`: the time.monotonic() at which the speech itself ended (the VAD notices
        only after its end-silence window)."""


class MicListener:
    def __init__(
        self,
        detector: UtteranceDetector,
        hooks: ListenerHooks,
        max_utterance_s: float,
        speculate_after_s: float | None = None,
    ) -> None:
        """`speculate_after_s` None: no `paused` / `went_on` reports."""
        self._detector = detector
        self._hooks = hooks
        self._speculate_after_s = speculate_after_s
        self._maybe = False  # an onset is being held, not yet confirmed
        self._pause_reported = False  # `paused` was called for the current pause
        self._max_samples = int(max_utterance_s * SPEECH_RATE)
        self.mode = "hands_free"
        self._ptt: list[np.ndarray] | None = None  # audio while the talk button is held
        self._ptt_samples = 0  # bounded by max_utterance_s
        self._stream_s = 0.0  # seconds of mic audio seen, the detector's clock

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mic mode {mode!r}; use one of {MODES}")
        self.mode = mode
        self._pause_reported = False
        self._detector.reset()
        self._stream_s = 0.0  # the detector's clock restarts with it
        self._ptt = None

    async def push_to_talk(self, down: bool) -> bool:
        """Returns True when releasing the button delivered an utterance."""
        if self.mode != "push_to_talk":
            return False
        if down and self._ptt is None:
            self._ptt, self._ptt_samples = [], 0
            await self._hooks.speech_started()
        elif not down and self._ptt is not None:
            return await self._release(truncated=False)
        return False

    async def push(self, audio: np.ndarray) -> None:
        """The next mic audio: float32 mono at SPEECH_RATE, any length."""
        self._stream_s += len(audio) / SPEECH_RATE
        if self.mode == "push_to_talk":
            if self._ptt is not None:
                self._ptt.append(audio)
                self._ptt_samples += len(audio)
                if self._ptt_samples >= self._max_samples:
                    await self._release(truncated=True)
            return
        for event in self._detector.push(audio):
            await self._handle(event)
        self._watch_live_state()

    async def _release(self, truncated: bool) -> bool:
        """End the push-to-talk utterance: on release, or when it reaches the length limit
        (held longer, the button's audio is dropped until it is pressed again)."""
        audio = np.concatenate(self._ptt)[: self._max_samples] if self._ptt else np.zeros(0, np.float32)
        self._ptt = None
        if not len(audio):
            return False
        await self._hooks.utterance(audio, time.monotonic(), truncated)
        return True

    async def _handle(self, event) -> None:
        if isinstance(event, SpeechStart):
            self._maybe = False
            await self._hooks.speech_started()
        elif isinstance(event, SpeechEnd):
            self._pause_reported = False
            ended_at = time.monotonic() - (self._stream_s - event.t_end_s)
            await self._hooks.utterance(event.audio, ended_at, event.truncated)

    def _watch_live_state(self) -> None:
        phase = self._detector.phase
        if phase == "onset" and not self._maybe:
            self._maybe = True
            self._hooks.maybe_speech()
        elif phase == "silence" and self._maybe:  # never became speech: a cough, a click
            self._maybe = False
            self._hooks.blip()
        if self._speculate_after_s is None or phase != "speech":
            return
        pause = self._detector.silence_s
        if pause >= self._speculate_after_s and not self._pause_reported:
            self._pause_reported = True
            self._hooks.paused(self._detector.utterance_audio(), time.monotonic() - pause)
        elif pause == 0 and self._pause_reported:  # the user went on talking
            self._pause_reported = False
            self._hooks.went_on()
