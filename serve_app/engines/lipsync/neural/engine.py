"""What Wav2Lip and MuseTalk share: avatars, batching frames across sessions, pasting the
generated lower face back into the avatar's frame, crossfades with the idle loop.

A subclass turns chunks into model inputs (`features`) and model inputs into face crops
(`generate`). Sprite avatars have no real face: they are drawn by the weight-free engine, so
the default avatar keeps working when a neural engine is configured.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from serve_app.engines.lipsync.base import LipSyncChunk
from serve_app.engines.lipsync.neural.avatar import NeuralAvatar
from serve_app.engines.lipsync.neural.crops import paste
from serve_app.engines.lipsync.viseme_engine import VisemeLipSyncEngine, fade_weights

log = logging.getLogger(__name__)


class NeuralLipSyncEngine:
    crop_size: int = 256
    context_frames = 0
    lookahead_frames = 0

    def __init__(self, avatars_dir: str | Path, max_batch_frames: int = 64) -> None:
        self.avatars_dir = Path(avatars_dir)
        self.max_batch_frames = max_batch_frames  # frames per forward pass (GPU memory bound)
        self._viseme = VisemeLipSyncEngine(avatars_dir)  # idle frames, sprites, listing

    # --- the LipSyncEngine protocol ---------------------------------------------------------
    def load(self, avatar_id: str):
        avatar = self._viseme.load(avatar_id)  # validates the id and the folder
        if getattr(avatar, "kind", "sprite") == "sprite":
            return avatar
        neural = NeuralAvatar(avatar.folder, self.crop_size)
        self.prepare_avatar(neural)
        return neural

    def frame_size(self, avatar_id: str) -> tuple[int, int]:
        return self._viseme.frame_size(avatar_id)

    def idle_frame(self, avatar_id: str, index: int) -> np.ndarray:
        return self._viseme.idle_frame(avatar_id, index)

    def render(self, chunk: LipSyncChunk, avatar=None) -> np.ndarray:
        return self.render_batch([chunk], [avatar or self.load(chunk.avatar_id)])[0]

    def render_batch(self, chunks: list[LipSyncChunk], avatars: list) -> list[np.ndarray]:
        """All neural chunks' frames go through the model together, `max_batch_frames` at a
        time, whichever session and avatar they belong to."""
        out = [None if isinstance(a, NeuralAvatar) else self._viseme.render(c, a)
               for c, a in zip(chunks, avatars)]
        neural = [i for i, frames in enumerate(out) if frames is None]
        if not neural:
            return out
        feats = np.concatenate(self.features([chunks[i] for i in neural]))
        # One row per frame of every neural chunk: its avatar and the stored frame it shows.
        sources = {i: [avatars[i].source_index(chunks[i].first_frame + k) for k in range(chunks[i].n_frames)]
                   for i in neural}
        rows = [(avatars[i], src) for i in neural for src in sources[i]]
        faces = []
        for s in range(0, len(rows), self.max_batch_frames):
            part = rows[s : s + self.max_batch_frames]
            faces.append(self.generate([a for a, _ in part], [src for _, src in part], feats[s : s + len(part)]))
        faces = np.concatenate(faces)
        pos = 0
        for i in neural:
            n = chunks[i].n_frames
            out[i] = self.compose(chunks[i], avatars[i], faces[pos : pos + n], sources[i])
            pos += n
        return out

    def compose(self, chunk: LipSyncChunk, avatar: NeuralAvatar, faces: np.ndarray, sources: list[int]) -> np.ndarray:
        """The chunk's frames: idle frames with the generated faces (BGR crops) blended in."""
        frames = np.empty((chunk.n_frames, avatar.size[1], avatar.size[0], 3), np.uint8)
        weights = dict(fade_weights(chunk.n_frames, chunk.fade_in, chunk.fade_out))
        for k, (face, src) in enumerate(zip(faces, sources)):
            frames[k] = avatar.idle_frame(chunk.first_frame + k)
            rgb = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
            # Where a reply starts or ends, the generated face fades in from the idle one.
            paste(frames[k], rgb, avatar.boxes[src], avatar.mask * weights.get(k, 1.0))
        return frames

    # --- for subclasses ---------------------------------------------------------------------
    def prepare_avatar(self, avatar: NeuralAvatar) -> None:
        """Engine-specific per-avatar data (MuseTalk's reference latents)."""

    def features(self, chunks: list[LipSyncChunk]) -> list[np.ndarray]:
        """Audio features, one array per chunk with one row per frame."""
        raise NotImplementedError

    def generate(self, avatars: list[NeuralAvatar], sources: list[int], feats: np.ndarray) -> np.ndarray:
        """Face crops (B, S, S, 3) uint8 BGR for frames of `avatars` at stored frame `sources`."""
        raise NotImplementedError


def segment_of(chunk: LipSyncChunk) -> tuple[np.ndarray, int, int, int | None]:
    """(segment, offset, first reply frame, reply length or None). A chunk sent without a
    segment (a direct call) is treated as a whole utterance on its own."""
    if chunk.segment is None:
        return chunk.audio, 0, 0, len(chunk.audio)
    return chunk.segment, chunk.segment_offset, chunk.reply_frame, chunk.reply_samples


def pad_to(segment: np.ndarray, offset: int, end: int) -> np.ndarray:
    """Zeros after the segment up to reply sample `end` (the resampler may hold back a few)."""
    missing = end - (offset + len(segment))
    return np.pad(segment, (0, missing)) if missing > 0 else segment
