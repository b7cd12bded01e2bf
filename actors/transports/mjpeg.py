"""MJPEG: a session's face as a stream of JPEG frames, for a plain `<img>` (the MuseTalk
seed's `/api/stream/{id}`, and `/api/sessions/{id}/mjpeg`).

A viewer reads the session clock at `fps` (25, or a divisor of it) and keeps at most
`queue_frames` encoded frames for the ingress to pull; a viewer that falls behind loses the
oldest (counted in `dropped`). The stream carries no audio: an `<img>` plays none.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from actors.clock import AVUnit, MediaClock
from actors.transports.pacing import encode_jpeg, pace
from serve_app.engines.media import FPS

PULL_WAIT_S = 1.0


class MjpegViewer:
    def __init__(self, clock: MediaClock, fps: int, queue_frames: int, quality: int) -> None:
        if fps < 1 or FPS % fps:
            raise ValueError(f"fps must divide {FPS}: 1, 5 or 25")
        self._clock = clock
        self._every = FPS // fps
        self._quality = quality
        self._frames: deque[bytes] = deque(maxlen=queue_frames)
        self._ready = asyncio.Event()
        self._pacer: asyncio.Task | None = None
        self.sent = 0
        self.dropped = 0
        self.closed = False

    def start(self) -> None:
        first = self._clock.current_index()
        self._pacer = asyncio.get_running_loop().create_task(
            pace(self._clock, first - first % self._every, self._encode, self._every))

    def _encode(self, index: int, unit: AVUnit) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1  # the deque drops the oldest
        self._frames.append(encode_jpeg(unit.frame, self._quality))
        self._ready.set()

    async def pull(self, wait_s: float = PULL_WAIT_S) -> list[bytes] | None:
        """The frames encoded since the last pull (None once closed)."""
        if not self._frames and not self.closed:
            self._ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_s)
        if self.closed:
            return None
        frames = list(self._frames)
        self._frames.clear()
        self.sent += len(frames)
        return frames

    async def close(self) -> None:
        self.closed = True
        self._ready.set()
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer
