"""File: a turn rendered into an MP4 (H.264 + AAC, 25 fps) as fast as its stages allow.

`FileOut` is the offline `MediaOut`: each unit's frame and its 40 ms of audio are encoded with
the same timestamp (frame n at n / 25 s, its audio from sample n * 1920), so mouth and voice
line up in the file by construction, as they do on the live clock. It writes to a `.partial`
file that `finish()` renames: a reader never sees half a video.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from actors.clock import AVUnit
from serve_app.engines.media import FPS, OUTPUT_PER_FRAME, OUTPUT_RATE

CRF = "23"  # x264 quality: visually clean for a face, ~1 Mbit/s at 512 px
PRESET = "veryfast"


class FileOut:
    def __init__(self, path: Path, on_frame: Callable[[int], None] = lambda frames: None) -> None:
        """`on_frame(frames)` after each frame is written (a job's progress)."""
        self.path = path
        self._on_frame = on_frame
        self._partial = path.with_name(path.name + ".partial")
        self._container: av.container.OutputContainer | None = None
        self._video = self._audio = None
        self.frames = 0

    def _open(self, frame: np.ndarray) -> None:
        height, width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2  # yuv420p needs even sides
        self._container = av.open(str(self._partial), "w", format="mp4")
        self._video = self._container.add_stream("libx264", rate=FPS)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"preset": PRESET, "crf": CRF}
        self._audio = self._container.add_stream("aac", rate=OUTPUT_RATE)
        self._audio.layout = "mono"

    # --- MediaOut ------------------------------------------------------------------------
    async def put(self, unit: AVUnit) -> None:
        if self._container is None:
            self._open(unit.frame)
        h, w = self._video.height, self._video.width
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(unit.frame[:h, :w]), format="rgb24")
        picture.pts, picture.time_base = self.frames, Fraction(1, FPS)
        sound = av.AudioFrame(format="s16", layout="mono", samples=OUTPUT_PER_FRAME)
        sound.planes[0].update(np.ascontiguousarray(unit.audio, np.int16).tobytes())
        sound.sample_rate, sound.pts, sound.time_base = OUTPUT_RATE, self.frames * OUTPUT_PER_FRAME, Fraction(1, OUTPUT_RATE)
        self._container.mux(self._video.encode(picture))
        self._container.mux(self._audio.encode(sound))
        self.frames += 1
        self._on_frame(self.frames)
        if unit.playout is not None:
            unit.playout.shown(unit.last)
        await asyncio.sleep(0)  # status calls are answered between frames

    def next_speech_index(self) -> int:
        return self.frames

    def slack_s(self) -> None:  # no deadline: a file waits for every frame
        return None

    def hold(self) -> None:  # nobody talks over a file
        pass

    def resume(self) -> None:
        pass

    def flush(self) -> int:
        return 0

    # --- the file ----------------------------------------------------------------------
    def finish(self) -> Path:
        """Flush the encoders and publish the file under its name."""
        if self._container is None:
            raise ValueError("nothing was rendered")
        self._container.mux(self._video.encode(None))
        self._container.mux(self._audio.encode(None))
        self._container.close()
        self._partial.rename(self.path)
        return self.path

    def discard(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - half-written: it goes anyway
                pass
        self._partial.unlink(missing_ok=True)
