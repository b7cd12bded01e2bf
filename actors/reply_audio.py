"""The reply's audio on its way to lip-sync: cut into chunks of frames, each sent once the
audio the lip-sync model looks ahead at has arrived.

Neural lip-sync looks past a frame's own 40 ms (Wav2Lip's mel window reaches 200 ms ahead) and
back before it, so a chunk of frames goes out with a segment of the reply's 16 kHz audio around
it. Waiting for that look-ahead is real latency at the start of every reply; it shows in the
turn's tts_first_audio -> first_frame_sent marks instead of being hidden. The weight-free
engine needs neither, and then a chunk goes out the moment its own audio is complete.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from serve_app.engines.audio import StreamResampler
from serve_app.engines.media import OUTPUT_PER_FRAME, OUTPUT_RATE, SAMPLES_PER_FRAME, SPEECH_RATE

# The resampler holds back ~16 samples of its filter until more audio comes: a chunk does not
# wait a whole block for them (its tail gets zeros there, and engines pad a short segment).
RESAMPLER_SLACK = SAMPLES_PER_FRAME // 4


@dataclass
class ReplyChunk:
    """Frames [first, first + n) of the reply (0 = its first frame)."""

    first: int
    n: int
    audio48: np.ndarray  # what the client hears with these frames
    audio16: np.ndarray  # the same at the lip-sync rate, n * SAMPLES_PER_FRAME samples
    segment: np.ndarray  # 16 kHz reply audio around the chunk: context, the chunk, look-ahead
    segment_offset: int  # reply sample index of segment[0]
    total: int | None    # the reply's length in 16 kHz samples once it is known
    last: bool


class ReplyAudio:
    def __init__(self, context_frames: int = 0, lookahead_frames: int = 0) -> None:
        self.context_frames = context_frames
        self.lookahead_frames = lookahead_frames
        self._resampler = StreamResampler(OUTPUT_RATE, SPEECH_RATE)
        self._audio16 = np.zeros(0, np.float32)  # reply samples [_offset, _offset + len)
        self._offset = 0
        self._waiting: deque[tuple[int, np.ndarray]] = deque()  # (first frame, 48 kHz audio)
        self._frames = 0
        self._total: int | None = None

    def add(self, audio48: np.ndarray) -> None:
        """The next whole frames of the reply (a multiple of OUTPUT_PER_FRAME samples)."""
        n = len(audio48) // OUTPUT_PER_FRAME
        self._waiting.append((self._frames, audio48[: n * OUTPUT_PER_FRAME]))
        self._frames += n
        self._append16(self._resampler.push(audio48))

    def finish(self) -> None:
        """No more audio: every chunk still waiting becomes ready."""
        self._append16(self._resampler.flush())
        self._total = self._frames * SAMPLES_PER_FRAME
        self._append16(np.zeros(max(0, self._total - self._end()), np.float32))

    def ready(self) -> list[ReplyChunk]:
        """Chunks whose look-ahead has arrived (all of them after finish()), oldest first."""
        out = []
        while self._waiting:
            first, audio48 = self._waiting[0]
            n = len(audio48) // OUTPUT_PER_FRAME
            need = (first + n + self.lookahead_frames) * SAMPLES_PER_FRAME
            if self._total is None and self._end() + RESAMPLER_SLACK < need:
                break
            self._waiting.popleft()
            out.append(self._chunk(first, n, audio48, min(need, self._end())))
        self._forget_before(self._waiting[0][0] if self._waiting else self._frames)
        return out

    def _chunk(self, first: int, n: int, audio48: np.ndarray, end: int) -> ReplyChunk:
        start = max(self._offset, (first - self.context_frames) * SAMPLES_PER_FRAME)
        a, b = first * SAMPLES_PER_FRAME, (first + n) * SAMPLES_PER_FRAME
        own = self._audio16[a - self._offset : b - self._offset]
        return ReplyChunk(
            first=first,
            n=n,
            audio48=audio48,
            audio16=np.pad(own, (0, n * SAMPLES_PER_FRAME - len(own))),
            segment=self._audio16[start - self._offset : end - self._offset].copy(),
            segment_offset=start,
            total=self._total,
            last=self._total is not None and not self._waiting,
        )

    def _end(self) -> int:
        return self._offset + len(self._audio16)

    def _append16(self, samples: np.ndarray) -> None:
        self._audio16 = np.concatenate([self._audio16, samples.astype(np.float32, copy=False)])

    def _forget_before(self, frame: int) -> None:
        """Keep only what a waiting chunk's context can still reach: memory stays bounded."""
        keep = max(0, (frame - self.context_frames) * SAMPLES_PER_FRAME)
        if keep > self._offset:
            self._audio16 = self._audio16[keep - self._offset :]
            self._offset = keep
