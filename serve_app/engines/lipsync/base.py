"""The lip-sync stage: a chunk of speech audio in, one video frame per 40 ms out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from serve_app.engines.media import FPS, SAMPLES_PER_FRAME, SPEECH_RATE  # noqa: F401 (the stage's units)

# Mouth shapes in the spirit of Rhubarb Lip Sync:
# A closed (P B M), B slightly open (K S T, EE), C open (EH AE), D wide open (AA),
# E rounded (AO ER), F puckered (UW OW W), G teeth on lip (F V), H tongue (L), X rest.
VISEMES = ("A", "B", "C", "D", "E", "F", "G", "H", "X")


@dataclass
class LipSyncChunk:
    """What one lip-sync call renders.

    ``first_frame`` is the session clock's frame index of the first frame, so idle motion and
    blinks continue seamlessly through speech. ``audio`` is float32 mono 16 kHz,
    ``n_frames * SAMPLES_PER_FRAME`` samples long. ``visemes`` (one per frame) come from the
    TTS phoneme timings when it has them; engines that need them derive them from ``audio``
    otherwise.
    """

    avatar_id: str
    first_frame: int
    audio: np.ndarray
    visemes: list[str] | None = None
    # Frames at the chunk's start / end that crossfade from / to the idle picture: set on the
    # first and last chunk of a reply, so speech eases in and out of the idle loop.
    fade_in: int = 0
    fade_out: int = 0
    # For engines that hear around a frame (neural ones): the reply's 16 kHz audio from reply
    # sample `segment_offset` on, covering the engine's context before the chunk and its
    # look-ahead after it; `reply_frame` is the chunk's first frame counted from the reply's
    # start and `reply_samples` the reply's length once known (its last chunk).
    segment: np.ndarray | None = None
    segment_offset: int = 0
    reply_frame: int = 0
    reply_samples: int | None = None

    @property
    def n_frames(self) -> int:
        return len(self.audio) // SAMPLES_PER_FRAME


class LipSyncEngine(Protocol):
    """Every lip-sync backend implements this; backends are chosen by name in config.

    ``context_frames`` / ``lookahead_frames``: audio the engine needs before a chunk and after
    its last frame (0 for engines that map each frame's own audio to a mouth shape).
    """

    context_frames: int
    lookahead_frames: int

    def frame_size(self, avatar_id: str) -> tuple[int, int]:
        """(width, height) of the frames rendered for this avatar."""
        ...

    def render(self, chunk: LipSyncChunk) -> np.ndarray:
        """Talking frames for the chunk: uint8 RGB array of shape (n_frames, H, W, 3)."""
        ...

    def idle_frame(self, avatar_id: str, index: int) -> np.ndarray:
        """The idle frame due at clock frame ``index`` (blinks, slight motion): (H, W, 3)."""
        ...

    def render_batch(self, chunks: list[LipSyncChunk], avatars: list) -> list[np.ndarray]:
        """Several sessions' chunks at once (one model call where the engine can batch);
        ``avatars`` are the loaded avatars, one per chunk."""
        ...
