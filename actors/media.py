"""The session's A/V clock and the aiortc tracks that it paces.

One clock per session: video frame n is due at t0 + n * 40 ms and carries exactly the two
20 ms audio frames 2n and 2n + 1. Both tracks take their media from the same `AVUnit` for
index n, so audio and video cannot drift apart however long the session runs.

Speech units wait in a short bounded queue (producers block when it is full); when it is
empty the clock plays idle frames with silence, so the stream never stalls.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

FPS = 25
FRAME_S = 1 / FPS
AUDIO_RATE = 48_000
AUDIO_PER_UNIT = AUDIO_RATE // FPS  # 1920 samples: two 20 ms packets
AUDIO_PER_PACKET = AUDIO_PER_UNIT // 2
VIDEO_TIME_BASE = Fraction(1, 90_000)
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
# A track this far behind its schedule skips ahead instead of bursting to catch up.
MAX_LATE_FRAMES = 5
# Units cached for the slower track; a client that negotiated only one track must not grow this.
MAX_CACHED_UNITS = 50

SILENCE = np.zeros(AUDIO_PER_UNIT, dtype=np.int16)


@dataclass
class AVUnit:
    """40 ms of output: one RGB frame and its 1920 samples of 48 kHz mono audio."""

    frame: np.ndarray
    audio: np.ndarray = field(default_factory=lambda: SILENCE)
    turn_id: str | None = None  # None for idle units
    last: bool = False  # the final unit of its turn


@dataclass
class ClockStats:
    video_frames: int = 0
    audio_packets: int = 0
    speech_frames: int = 0
    late_frames: int = 0  # frames sent after their due time by more than one frame
    skipped_frames: int = 0


class MediaClock:
    """Assigns units to frame indices and paces both tracks against one start time."""

    def __init__(
        self,
        idle_frame: Callable[[int], np.ndarray],
        max_frames_ahead: int,
        on_video_sent: Callable[[int, AVUnit], None] | None = None,
    ) -> None:
        self._idle_frame = idle_frame
        self._max_ahead = max_frames_ahead
        self._on_video_sent = on_video_sent
        self._speech: deque[AVUnit] = deque()
        self._space = asyncio.Event()
        self._units: dict[int, AVUnit] = {}
        self._next_index = 0  # lowest index not yet assigned a unit
        self._last_video: int | None = None
        self._held = False  # speech paused (the user may be starting to talk)
        self.t0: float | None = None
        self.stats = ClockStats()

    # --- time -------------------------------------------------------------------------
    def start(self) -> float:
        if self.t0 is None:
            self.t0 = time.monotonic()
        return self.t0

    def current_index(self) -> int:
        if self.t0 is None:
            return 0
        return max(0, int((time.monotonic() - self.t0) / FRAME_S))

    def next_speech_index(self) -> int:
        """The frame index at which a unit queued now will play (when the queue doesn't underrun)."""
        return max(self._next_index, self.current_index()) + len(self._speech)

    # --- producing ----------------------------------------------------------------------
    async def put(self, unit: AVUnit) -> None:
        """Queue a speech unit, waiting while the queue is a full `max_frames_ahead` deep."""
        while len(self._speech) >= self._max_ahead:
            self._space.clear()
            await self._space.wait()
        self._speech.append(unit)

    def queued(self) -> int:
        return len(self._speech)

    def hold(self) -> None:
        """Pause speech at once, keeping it: unsent speech units go back to the front of the
        queue and idle frames play until `resume()` (a false alarm) or `flush()` (barge-in)."""
        if self._held:
            return
        self._held = True
        sent = -1 if self._last_video is None else self._last_video  # frames on screen stay
        assigned = sorted(i for i, u in self._units.items() if u.turn_id is not None and i > sent)
        for index in reversed(assigned):
            self._speech.appendleft(self._units[index])
            self._units[index] = AVUnit(self._idle_frame(index))

    def resume(self) -> None:
        self._held = False

    def flush(self) -> int:
        """Barge-in: drop queued speech and turn already-assigned, unsent speech units idle."""
        dropped = len(self._speech)
        self._speech.clear()
        self._held = False
        for index, unit in list(self._units.items()):
            if unit.turn_id is not None:
                self._units[index] = AVUnit(self._idle_frame(index))
                dropped += 1
        self._space.set()
        return dropped

    # --- consuming ----------------------------------------------------------------------
    def unit(self, index: int) -> AVUnit:
        """The unit for frame `index`; the first track to ask assigns it, the other reuses it."""
        unit = self._units.get(index)
        if unit is None:
            if self._speech and index >= self._next_index and not self._held:
                unit = self._speech.popleft()
                self._space.set()
            else:
                unit = AVUnit(self._idle_frame(index))
            self._units[index] = unit
            self._next_index = max(self._next_index, index + 1)
            while len(self._units) > MAX_CACHED_UNITS:
                del self._units[min(self._units)]
        return unit

    def audio_done(self, index: int) -> None:
        """The audio track finished unit `index`: forget units both tracks are done with."""
        below = index if self._last_video is None else min(index, self._last_video)
        for stale in [i for i in self._units if i < below]:
            del self._units[stale]

    def video_sent(self, index: int, unit: AVUnit) -> None:
        self._last_video = index
        self.stats.video_frames += 1
        if unit.turn_id is not None:
            self.stats.speech_frames += 1
        if self._on_video_sent is not None:
            self._on_video_sent(index, unit)


class _ClockedTrack(MediaStreamTrack):
    """Shared pacing: wait until the packet's due time, skip ahead when far behind."""

    period_s: float

    def __init__(self, clock: MediaClock) -> None:
        super().__init__()
        self._clock = clock
        self._next: int | None = None

    def _first_index(self) -> int:
        raise NotImplementedError

    async def _wait_turn(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        t0 = self._clock.start()
        if self._next is None:
            self._next = self._first_index()
        delay = t0 + self._next * self.period_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > MAX_LATE_FRAMES * FRAME_S:
            caught_up = int((time.monotonic() - t0) / self.period_s)
            self._clock.stats.skipped_frames += caught_up - self._next
            self._next = caught_up
        elif -delay > FRAME_S:
            self._clock.stats.late_frames += 1
        index = self._next
        self._next += 1
        return index


class AvatarVideoTrack(_ClockedTrack):
    kind = "video"
    period_s = FRAME_S

    def _first_index(self) -> int:
        return self._clock.current_index()

    async def recv(self) -> VideoFrame:
        n = await self._wait_turn()
        unit = self._clock.unit(n)
        frame = VideoFrame.from_ndarray(unit.frame, format="rgb24")
        frame.pts = n * 3600
        frame.time_base = VIDEO_TIME_BASE
        self._clock.video_sent(n, unit)
        return frame


class AvatarAudioTrack(_ClockedTrack):
    kind = "audio"
    period_s = FRAME_S / 2

    def _first_index(self) -> int:
        return 2 * self._clock.current_index()

    async def recv(self) -> AudioFrame:
        m = await self._wait_turn()
        unit = self._clock.unit(m // 2)
        half = m % 2
        samples = unit.audio[half * AUDIO_PER_PACKET : (half + 1) * AUDIO_PER_PACKET]
        frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_PER_PACKET)
        frame.planes[0].update(np.ascontiguousarray(samples).tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = m * AUDIO_PER_PACKET
        frame.time_base = AUDIO_TIME_BASE
        self._clock.stats.audio_packets += 1
        if half:
            self._clock.audio_done(m // 2)
        return frame
