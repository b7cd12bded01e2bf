"""Reading the session clock in real time, for outputs that are not aiortc tracks (WebSocket,
MJPEG): frame n at t0 + n * 40 ms, as the WebRTC tracks do, skipping ahead when far behind;
and the JPEG encoding both of those send."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

from actors.clock import AVUnit, MediaClock
from serve_app.engines.media import FRAME_S

MAX_LATE_FRAMES = 5  # this far behind the clock, skip ahead instead of bursting
# Audio packets sent over 80 ms late within SHED_WINDOW video frames (2 s, 100 packets) that
# make the video send every other frame: a sustained shortage, not one stall (a 200 ms stall
# makes ~10 late packets at once and is over by the time it is counted).
SHED_AFTER_LATE = 15
SHED_WINDOW = 50
RECOVER_AFTER = 25  # video frames (2 s at half rate) with no audio packet late: every frame again


class VideoShedder:
    """Audio first: decides, frame by frame, whether a video track sends every frame (stride
    1) or every other one (stride 2, half the encoding work), from the running count of
    audio packets that left late. Late video frames alone shed nothing: they still arrive."""

    def __init__(self, late_total: int = 0) -> None:
        # The late count at each of the last SHED_WINDOW frames (and the one before them).
        self._history: deque[int] = deque([late_total], maxlen=SHED_WINDOW + 1)
        self._calm = 0  # frames in a row with no new late packet
        self._stride = 1

    def stride(self, late_total: int) -> int:
        self._calm = 0 if late_total > self._history[-1] else self._calm + 1
        self._history.append(late_total)
        if self._stride == 1 and late_total - self._history[0] >= SHED_AFTER_LATE:
            self._stride = 2
        elif self._stride == 2 and self._calm >= RECOVER_AFTER:
            self._stride = 1
            self._history.clear()
            self._history.append(late_total)
        return self._stride


async def pace(clock: MediaClock, first: int, on_frame: Callable[[int, AVUnit], None], every: int = 1) -> None:
    """Call `on_frame(index, unit)` for frames first, first + every, ... as each falls due,
    reporting each as shown (the first reader to show a frame reports it: clock.video_sent)."""
    t0 = clock.start()
    index = first
    while True:
        delay = t0 + index * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > MAX_LATE_FRAMES * FRAME_S:
            index = int((time.monotonic() - t0) / FRAME_S) // every * every
        unit = clock.unit(index)
        clock.video_sent(index, unit)
        on_frame(index, unit)
        index += every


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """An RGB frame as JPEG bytes."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return jpeg.tobytes()
