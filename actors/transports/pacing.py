"""Reading the session clock in real time, for outputs that are not aiortc tracks (WebSocket,
MJPEG): frame n at t0 + n * 40 ms, as the WebRTC tracks do, skipping ahead when far behind;
and the JPEG encoding both of those send."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import cv2
import numpy as np

from actors.clock import AVUnit, MediaClock
from serve_app.engines.media import FRAME_S

MAX_LATE_FRAMES = 5  # this far behind the clock, skip ahead instead of bursting


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
