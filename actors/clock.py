"""The session's A/V clock: where a turn's media goes out (the `MediaOut` it writes to).

One clock per session: video frame n is due at t0 + n * 40 ms and carries exactly the two
20 ms audio frames 2n and 2n + 1. Every reader of the clock (the WebRTC tracks, a WebSocket
or MJPEG sender) takes its media from the same `AVUnit` for index n, so audio and video
cannot drift apart however long the session runs.

Speech units wait in a short bounded queue (producers block when it is full); when it is
empty the clock plays idle frames with silence, so the stream never stalls. A reader that
shows a unit reports it (`video_sent`), and the unit's `Playout` learns what its turn has
shown, so a turn knows when it has been played out.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

import numpy as np

from serve_app.engines.media import FRAME_S, OUTPUT_PER_FRAME

# Units cached for the slower track; a client that negotiated only one track must not grow this.
MAX_CACHED_UNITS = 50

SILENCE = np.zeros(OUTPUT_PER_FRAME, dtype=np.int16)


Outcome = Literal["played", "interrupted"]


class Playout:
    """What the client has been shown of one turn. The media output reports each of the
    turn's frames as it is shown; `done` resolves with "played" once the last one is, or with
    "interrupted" when the turn is cut (or fails, or has nothing to say) before that."""

    def __init__(self, turn_id: str, on_first_frame: Callable[[], None] = lambda: None) -> None:
        self.turn_id = turn_id
        self.frames_shown = 0
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._on_first_frame = on_first_frame

    def shown(self, last: bool) -> None:
        if self.done.done():
            return  # a straggler after the turn was cut
        self.frames_shown += 1
        if self.frames_shown == 1:
            self._on_first_frame()
        if last:
            self.finish("played")

    def finish(self, outcome: Outcome) -> None:
        if not self.done.done():
            self.done.set_result(outcome)


@dataclass
class AVUnit:
    """40 ms of output: one RGB frame and its 1920 samples of 48 kHz mono audio."""

    frame: np.ndarray
    audio: np.ndarray = field(default_factory=lambda: SILENCE)
    playout: Playout | None = None  # None for idle units
    last: bool = False  # the final unit of its turn
    viseme: str = "X"  # the mouth shape shown (X: rest), for clients that draw the face
    repeated: bool = False  # its lip-sync frame missed its deadline: the previous frame again

    @property
    def turn_id(self) -> str | None:
        return self.playout.turn_id if self.playout else None


class MediaOut(Protocol):
    """Where a turn puts its A/V units. `MediaClock` is the real-time one (every live
    transport reads it); an offline output (a file render) takes units as fast as they come.
    Either reports each unit it shows to the unit's `Playout`."""

    async def put(self, unit: AVUnit) -> None: ...
    def next_speech_index(self) -> int: ...
    def slack_s(self) -> float | None: ...
    def hold(self) -> None: ...
    def resume(self) -> None: ...
    def flush(self) -> int: ...


@dataclass
class ClockStats:
    """Running totals; under overload video gives way first (late, skipped, repeated frames)
    so that audio keeps time (audio_skipped and underrun_frames stay 0)."""

    video_frames: int = 0
    audio_packets: int = 0
    speech_frames: int = 0
    late_frames: int = 0  # video frames sent after their due time by more than one frame
    skipped_frames: int = 0  # video frames never sent: the track was far behind, or shed load
    repeated_frames: int = 0  # speech frames shown as the previous frame (lip-sync was late)
    audio_late: int = 0  # 20 ms audio packets sent over 80 ms past due (video then sheds)
    audio_skipped: int = 0  # 20 ms audio packets never sent: the audio track was far behind
    underrun_frames: int = 0  # silence mid-reply: its next speech unit was not there in time

    def missed(self) -> int:
        """Frames the client did not get as made, on time: the overload signal."""
        return self.late_frames + self.skipped_frames + self.repeated_frames + self.audio_skipped


class MediaClock:
    """Assigns units to frame indices and paces both tracks against one start time."""

    def __init__(
        self,
        idle_frame: Callable[[int], np.ndarray],
        max_frames_ahead: int,
    ) -> None:
        self._idle_frame = idle_frame
        self._max_ahead = max_frames_ahead
        self._speech: deque[AVUnit] = deque()
        self._space = asyncio.Event()
        self._units: dict[int, AVUnit] = {}
        self._next_index = 0  # lowest index not yet assigned a unit
        self._last_video: int | None = None
        self._reply: Playout | None = None  # the turn being heard, until its last unit
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

    def slack_s(self) -> float | None:
        """How long until the speech queued now has played out (None: no deadline, because
        the clock has not started or speech is held)."""
        if self.t0 is None or self._held:
            return None
        return (self.next_speech_index() - self.current_index()) * FRAME_S

    # --- producing ----------------------------------------------------------------------
    async def put(self, unit: AVUnit) -> None:
        """Queue a speech unit, waiting while the queue is a full `max_frames_ahead` deep. A unit
        of a turn already cut is dropped: a stage's answer can land as the turn is cancelled
        (asyncio.wait_for then returns it instead of raising), and none of it may be heard."""
        if unit.playout is not None and unit.playout.done.done():
            return
        while len(self._speech) >= self._max_ahead:
            self._space.clear()
            await self._space.wait()
            if unit.playout is not None and unit.playout.done.done():
                return
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
        assigned = sorted(i for i, u in self._units.items() if u.playout is not None and i > sent)
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
        self._reply = None
        for index, unit in list(self._units.items()):
            if unit.playout is not None:
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
                self._reply = None if unit.last else unit.playout
            else:
                unit = AVUnit(self._idle_frame(index))
                if self._reply is not None and not self._reply.done.done() and not self._held:
                    self.stats.underrun_frames += 1
            self._units[index] = unit
            self._next_index = max(self._next_index, index + 1)
            while len(self._units) > MAX_CACHED_UNITS:
                oldest = min(self._units)
                self._report_unshown(oldest, self._units.pop(oldest))
        return unit

    def _report_unshown(self, index: int, unit: AVUnit) -> None:
        """A speech unit no reader showed (skipped by a late track, or its cache entry
        dropped) still counts as played: its audio went out, and the turn must end."""
        if unit.playout is not None and (self._last_video is None or index > self._last_video):
            unit.playout.shown(unit.last)

    def audio_done(self, index: int) -> None:
        """The audio track finished unit `index`: forget units both tracks are done with."""
        below = index if self._last_video is None else min(index, self._last_video)
        for stale in [i for i in self._units if i < below]:
            del self._units[stale]

    def video_sent(self, index: int, unit: AVUnit) -> None:
        """A reader showed frame `index`. With several readers (WebRTC, WebSocket, MJPEG
        viewers) the first to show a frame reports it; the others' reports are ignored."""
        if self._last_video is not None and index <= self._last_video:
            return
        if self._last_video is not None:
            for skipped in range(self._last_video + 1, index):  # a reader that skipped ahead
                if (passed := self._units.get(skipped)) is not None:
                    self._report_unshown(skipped, passed)
        self._last_video = index
        self.stats.video_frames += 1
        if unit.playout is not None:
            self.stats.speech_frames += 1
            self.stats.repeated_frames += unit.repeated
            unit.playout.shown(unit.last)
