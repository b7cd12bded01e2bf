"""The session's ears: the browser's mic track -> 16 kHz -> utterances.

Hands-free mode runs the VAD utterance detector on everything heard. Push-to-talk mode
ignores the VAD: the utterance is exactly what was heard between the client's `ptt` down and
up messages. Either way the session gets `on_speech_start` (barge-in) and `on_utterance`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Awaitable, Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError

from serve_app.engines.audio import StreamResampler
from serve_app.engines.vad.base import SAMPLE_RATE
from serve_app.engines.vad.detector import SpeechEnd, SpeechStart, UtteranceDetector

log = logging.getLogger(__name__)

MODES = ("hands_free", "push_to_talk")


class MicListener:
    def __init__(
        self,
        detector: UtteranceDetector,
        on_speech_start: Callable[[], Awaitable[None]],
        on_utterance: Callable[[np.ndarray, float, bool], Awaitable[None]],
        max_utterance_s: float,
    ) -> None:
        """`on_utterance(audio, ended_at, truncated)`: `ended_at` is the time.monotonic() at
        which the speech itself ended (the VAD notices only after the end-silence window)."""
        self._detector = detector
        self._on_speech_start = on_speech_start
        self._on_utterance = on_utterance
        self._max_samples = int(max_utterance_s * SAMPLE_RATE)
        self.mode = "hands_free"
        self._ptt: list[np.ndarray] | None = None  # audio while the talk button is held
        self._stream_s = 0.0  # seconds of mic audio seen, the detector's clock
        self._task: asyncio.Task | None = None

    def start(self, track) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(track))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mic mode {mode!r}; use one of {MODES}")
        self.mode = mode
        self._detector.reset()
        self._stream_s = 0.0  # the detector's clock restarts with it
        self._ptt = None

    async def push_to_talk(self, down: bool) -> bool:
        """Returns True when releasing the button delivered an utterance."""
        if self.mode != "push_to_talk":
            return False
        if down and self._ptt is None:
            self._ptt = []
            await self._on_speech_start()
        elif not down and self._ptt is not None:
            audio = np.concatenate(self._ptt) if self._ptt else np.zeros(0, np.float32)
            self._ptt = None
            if len(audio):
                await self._on_utterance(audio[: self._max_samples], time.monotonic(), len(audio) > self._max_samples)
                return True
        return False

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
                    continue
                for event in self._detector.push(audio):
                    await self._handle(event)

    async def _handle(self, event) -> None:
        if isinstance(event, SpeechStart):
            await self._on_speech_start()
        elif isinstance(event, SpeechEnd):
            ended_at = time.monotonic() - (self._stream_s - event.t_end_s)
            await self._on_utterance(event.audio, ended_at, event.truncated)
