"""The session's ears: the browser's mic track -> 16 kHz -> utterances.

Hands-free mode runs the VAD utterance detector on everything heard. Push-to-talk mode
ignores the VAD: the utterance is exactly what was heard between the client's `ptt` down and
up messages. Either way the session gets `on_speech_start` (barge-in) and `on_utterance`.

Two things happen before the detector is sure, because every millisecond counts:
- the first voiced frame calls `on_maybe_speech` (the session holds the avatar's speech at
  once) and a blip that never becomes speech calls `on_blip` (it resumes);
- once a pause inside an utterance reaches `speculate_after_s`, `on_pause(audio, ended_at)`
  starts replying to what was said so far (speculation.py); if the pause turns out to be the
  end, the utterance comes with that reply already under way, else it is cancelled.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError

from serve_app.engines.audio import StreamResampler
from serve_app.engines.vad.base import SAMPLE_RATE
from serve_app.engines.vad.detector import SpeechEnd, SpeechStart, UtteranceDetector

log = logging.getLogger(__name__)

MODES = ("hands_free", "push_to_talk")
MIC_PREFETCH = 1  # audio packets aiortc holds back before handing one on (its default: 4)


def shorten_jitter_buffer(receiver) -> bool:
    """Let the mic's packets through after one more has arrived instead of four.

    aiortc's audio receiver keeps 4 packets (80 ms) in its jitter buffer as a playout cushion;
    the VAD plays nothing out, and reordering within the buffer is handled at any prefetch, so
    those 80 ms are pure reply and barge-in latency. aiortc has no option for it: this swaps
    the receiver's (private) buffer before any packet arrives. Returns False, leaving aiortc's
    default, if a future aiortc moved it.
    """
    from aiortc.jitterbuffer import JitterBuffer

    attr = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, attr, None)
    if not isinstance(current, JitterBuffer):
        log.warning("aiortc's receiver has no %s: the mic keeps aiortc's 80 ms buffer", attr)
        return False
    setattr(receiver, attr, JitterBuffer(capacity=current.capacity, prefetch=MIC_PREFETCH))
    return True


class MicListener:
    def __init__(
        self,
        detector: UtteranceDetector,
        on_speech_start: Callable[[], Awaitable[None]],
        on_utterance: Callable[..., Awaitable[None]],
        max_utterance_s: float,
        *,
        on_maybe_speech: Callable[[], None] = lambda: None,
        on_blip: Callable[[], None] = lambda: None,
        on_pause: Callable[[np.ndarray], Any] | None = None,
        speculate_after_s: float = 0.15,
    ) -> None:
        """`on_utterance(audio, ended_at, truncated, early)`: `ended_at` is the time.monotonic()
        at which the speech itself ended (the VAD notices only after the end-silence window);
        `early` is what `on_pause` returned for this utterance's final pause, or None.
        `on_pause` returns a handle with `.abort()` (a speculative reply)."""
        self._detector = detector
        self._on_speech_start = on_speech_start
        self._on_utterance = on_utterance
        self._on_maybe_speech = on_maybe_speech
        self._on_blip = on_blip
        self._on_pause = on_pause
        self._speculate_after_s = speculate_after_s
        self._maybe = False  # an onset is being held, not yet confirmed
        self._early: Any = None  # the reply started speculatively in the current pause
        self._max_samples = int(max_utterance_s * SAMPLE_RATE)
        self.mode = "hands_free"
        self._ptt: list[np.ndarray] | None = None  # audio while the talk button is held
        self._ptt_samples = 0  # bounded by max_utterance_s
        self._stream_s = 0.0  # seconds of mic audio seen, the detector's clock
        self._task: asyncio.Task | None = None

    def start(self, track) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(track))

    def stop(self) -> None:
        self.discard_speculation()
        if self._task is not None:
            self._task.cancel()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mic mode {mode!r}; use one of {MODES}")
        self.mode = mode
        self.discard_speculation()
        self._detector.reset()
        self._stream_s = 0.0  # the detector's clock restarts with it
        self._ptt = None

    async def push_to_talk(self, down: bool) -> bool:
        """Returns True when releasing the button delivered an utterance."""
        if self.mode != "push_to_talk":
            return False
        if down and self._ptt is None:
            self._ptt, self._ptt_samples = [], 0
            await self._on_speech_start()
        elif not down and self._ptt is not None:
            return await self._release(truncated=False)
        return False

    async def _release(self, truncated: bool) -> bool:
        """End the push-to-talk utterance: on release, or when it reaches the length limit
        (held longer, the button's audio is dropped until it is pressed again)."""
        audio = np.concatenate(self._ptt)[: self._max_samples] if self._ptt else np.zeros(0, np.float32)
        self._ptt = None
        if not len(audio):
            return False
        await self._on_utterance(audio, time.monotonic(), truncated, None)
        return True

    async def _run(self, track) -> None:
        resampler: StreamResampler | None = None
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if resampler is None:
                    resampler = StreamResampler(frame.sample_rate, SAMPLE_RATE)
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
                audio = resampler.push(pcm.astype(np.int16))
                self._stream_s += len(audio) / SAMPLE_RATE
                if self.mode == "push_to_talk":
                    if self._ptt is not None:
                        self._ptt.append(audio)
                        self._ptt_samples += len(audio)
                        if self._ptt_samples >= self._max_samples:
                            await self._release(truncated=True)
                    continue
                for event in self._detector.push(audio):
                    await self._handle(event)
                self._watch_live_state()

    async def _handle(self, event) -> None:
        if isinstance(event, SpeechStart):
            self._maybe = False
            await self._on_speech_start()
        elif isinstance(event, SpeechEnd):
            ended_at = time.monotonic() - (self._stream_s - event.t_end_s)
            if event.truncated:
                self.discard_speculation()  # cut mid-speech: the pause audio is not this utterance
            early, self._early = self._early, None
            await self._on_utterance(event.audio, ended_at, event.truncated, early)

    def discard_speculation(self) -> None:
        """Abort the reply started in the current pause, if any."""
        if self._early is not None:
            self._early.abort()
            self._early = None

    def _watch_live_state(self) -> None:
        phase = self._detector.phase
        if phase == "onset" and not self._maybe:
            self._maybe = True
            self._on_maybe_speech()
        elif phase == "silence" and self._maybe:  # never became speech: a cough, a click
            self._maybe = False
            self._on_blip()
        if self._on_pause is None or phase != "speech":
            return
        pause = self._detector.silence_s
        if pause >= self._speculate_after_s and self._early is None:
            ended_at = time.monotonic() - pause
            self._early = self._on_pause(self._detector.utterance_audio(), ended_at)
        elif pause == 0:  # the user went on talking
            self.discard_speculation()
