"""WebSocket: a session's events, reply audio and face to a client that is not a browser
peer (a kiosk, Unity, three.js), and its mic and commands back.

The ingress relays the socket (serve_app/ws_relay.py); this side paces the media by the
session clock and keeps what waits for the client bounded. Server -> client:
- text: the session's events (serve_app/events.py), plus `mouth` keyframes when the client
  asked for `face: "visemes"`, and `ping`;
- binary: `kind (1 byte) | frame index (uint32 LE) | payload`, kind 1 = the frame's 40 ms of
  reply audio (PCM16 mono at OUTPUT_RATE), kind 2 = the frame as JPEG. Frame n plays at
  n * 40 ms on the session clock, so audio, JPEG and mouth keyframes line up by index.

Flow control is the client's `ack` (the newest frame index it has taken in): frames more
than `video_window` ahead of the ack lose their picture, more than `audio_window` ahead lose
their audio too, counted in `dropped`. A client that stops reading stops acking, and the
server stops queueing for it: memory stays bounded whatever the proxies in between buffer.
"""
from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from actors.clock import AVUnit, MediaClock
from actors.transports.pacing import encode_jpeg, pace
from serve_app.engines.media import FRAME_S
from serve_app.events import Event, Mouth

AUDIO, JPEG = 1, 2  # binary message kinds
HEADER = struct.Struct("<BI")  # kind, frame index
MAX_EVENTS = 200  # events waiting for the relay to pull them
PULL_WAIT_S = 0.5  # a pull with nothing to send waits this long, then answers empty


@dataclass
class FlowStats:
    frames: int = 0  # frames paced
    video_dropped: int = 0  # frames sent without their picture (client behind)
    audio_dropped: int = 0  # frames sent without their audio (client far behind)
    queued_bytes: int = 0  # everything handed to the relay


def mouth_weight(audio: np.ndarray) -> float:
    """How open the mouth is for a frame's int16 audio, 0..1 (-45 dBFS closed, -12 wide)."""
    if not len(audio):
        return 0.0
    rms = float(np.sqrt(np.mean((audio.astype(np.float32) / 32768.0) ** 2)))
    db = 20 * np.log10(max(rms, 1e-6))
    return round(min(1.0, max(0.0, (db + 45.0) / 33.0)), 3)


class WebSocketTransport:
    def __init__(self, clock: MediaClock, face: str, *, video_window: int, audio_window: int,
                 jpeg_quality: int) -> None:
        self._clock = clock
        self.face = face
        self._video_window = video_window
        self._audio_window = audio_window
        self._jpeg_quality = jpeg_quality
        self._out: deque[str | bytes] = deque()
        self._events = 0  # of which are events (bounded by MAX_EVENTS)
        self._ready = asyncio.Event()
        self._acked = -1
        self._next: int | None = None
        self._pacer: asyncio.Task | None = None
        self.last_heard = time.monotonic()  # any client message (acks, pongs) keeps it alive
        self.stats = FlowStats()
        self.closed = False
        self.close_code, self.close_reason = 1000, ""

    def info(self) -> dict:
        return {"face": self.face, "acked_frame": self._acked, **asdict(self.stats)}

    @property
    def first_frame(self) -> int:
        return self._next if self._next is not None else self._clock.current_index()

    def start(self) -> None:
        self._next = self._clock.current_index()
        self._acked = self._next - 1  # the client has nothing yet, and owes nothing yet
        self._pacer = asyncio.get_running_loop().create_task(pace(self._clock, self._next, self._send_frame))

    async def close(self, code: int = 1000, reason: str = "the session ended") -> None:
        """Stop; the relay's next pull gets (code, reason) and closes the socket with them."""
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._ready.set()  # a waiting pull answers at once
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer

    # --- what the client sent ----------------------------------------------------------
    def ack(self, frame: int) -> None:
        self._acked = max(self._acked, min(frame, (self._next or 0) - 1))

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    # --- out -----------------------------------------------------------------------------
    def send_event(self, event: Event) -> None:
        self._push(event.to_json(), is_event=True)

    def send_text(self, text: str) -> None:
        """A protocol message (ping, pong, an error before closing): not an event."""
        self._push(text, is_event=False)

    async def pull(self, wait_s: float = PULL_WAIT_S) -> list[str | bytes] | None:
        """Everything queued for the client, oldest first; waits up to `wait_s` for something.
        None once the transport is closed."""
        if not self._out and not self.closed:
            self._ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_s)
        if self.closed and not self._out:
            return None
        out, self._out = list(self._out), deque()
        self._events = 0
        return out

    def _push(self, message: str | bytes, is_event: bool) -> None:
        self._out.append(message)
        if is_event:
            self._events += 1
            if self._events > MAX_EVENTS:  # a relay that stopped pulling: keep the newest
                self._drop_oldest(lambda m: isinstance(m, str))
        self.stats.queued_bytes += len(message)
        self._ready.set()

    def _drop_oldest(self, match) -> None:
        for i, message in enumerate(self._out):
            if match(message):
                del self._out[i]
                self._events -= 1
                return

    def _send_frame(self, index: int, unit: AVUnit) -> None:
        self._next = index + 1
        self.stats.frames += 1
        behind = index - self._acked
        if behind > self._audio_window:
            self.stats.audio_dropped += 1
            self.stats.video_dropped += 1
            return
        self._push(HEADER.pack(AUDIO, index) + np.ascontiguousarray(unit.audio, np.int16).tobytes(), False)
        if behind > self._video_window:
            self.stats.video_dropped += 1
            return
        if self.face == "jpeg":
            self._push(HEADER.pack(JPEG, index) + encode_jpeg(unit.frame, self._jpeg_quality), False)
        elif self.face == "visemes":
            self._push(Mouth(frame=index, t_ms=round(index * FRAME_S * 1000), viseme=unit.viseme,
                             weight=mouth_weight(unit.audio) if unit.playout else 0.0,
                             turn_id=unit.turn_id).to_json(), False)
