"""The weight-free lip-sync engine: one mouth shape per frame, chosen by viseme. Sprite avatars
paste a drawn mouth; photo and video avatars warp the real one."""
from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from serve_app.engines.lipsync.base import LipSyncChunk
from serve_app.engines.lipsync.face import FaceAvatar
from serve_app.engines.lipsync.sprite import MANIFEST, SpriteAvatar

AVATAR_ID = re.compile(r"[A-Za-z0-9_-]+")
AVATAR_KINDS = {"sprite": SpriteAvatar, "photo": FaceAvatar, "video": FaceAvatar}
Avatar = SpriteAvatar | FaceAvatar


def smooth_visemes(visemes: list[str]) -> list[str]:
    """Drop one-frame flickers: a viseme lasting a single frame between two identical
    neighbours takes their shape. Closures ("A") stay, or P/B/M would never show."""
    out = list(visemes)
    for i in range(1, len(out) - 1):
        if out[i - 1] == out[i + 1] != out[i] and out[i] != "A":
            out[i] = out[i - 1]
    return out


class VisemeLipSyncEngine:
    """Renders the avatars found in ``avatars_dir/<id>/``, loaded on first use.

    At most ``max_cached`` avatars stay loaded (least recently used go first), and an avatar
    whose folder was replaced (deleted and prepared again) is loaded anew.
    """

    context_frames = 0  # each frame's mouth comes from its own audio (or phoneme timings)
    lookahead_frames = 0

    def __init__(self, avatars_dir: str | Path, max_cached: int = 4):
        self.avatars_dir = Path(avatars_dir)
        self.max_cached = max_cached
        self._avatars: OrderedDict[str, tuple[tuple[int, int] | None, Avatar]] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, avatar_id: str) -> Avatar:
        """Load an avatar from disk (no caching): validates the id and the folder."""
        if not isinstance(avatar_id, str) or not AVATAR_ID.fullmatch(avatar_id):
            raise ValueError(f"invalid avatar id {avatar_id!r}: "
                             "use letters, digits, '_' and '-' only")
        folder = self.avatars_dir / avatar_id
        if not (folder / MANIFEST).is_file():
            known = ", ".join(self._candidates()) or "none"
            raise KeyError(f"unknown avatar {avatar_id!r}; available: {known}")  # no server path
        return _load(folder)

    def avatar(self, avatar_id: str) -> Avatar:
        version = folder_version(self.avatars_dir / avatar_id)
        with self._lock:
            cached = self._avatars.get(avatar_id)
            # A folder gone (deleted while in use) keeps what is loaded: a session's media
            # never dies from a delete; a new folder under the id is loaded afresh.
            if cached is not None and (cached[0] == version or version == MISSING):
                self._avatars.move_to_end(avatar_id)
                return cached[1]
        avatar = self.load(avatar_id)
        with self._lock:
            self._avatars[avatar_id] = (version, avatar)
            self._avatars.move_to_end(avatar_id)
            while len(self._avatars) > self.max_cached:
                self._avatars.popitem(last=False)
        return avatar

    def frame_size(self, avatar_id: str) -> tuple[int, int]:
        return self.avatar(avatar_id).size

    def render(self, chunk: LipSyncChunk, avatar: Avatar | None = None) -> np.ndarray:
        """One frame per 40 ms of audio. Visemes come from the chunk (padded with rest "X" or
        cut to the frame count) or, when it has none, from the audio. `avatar`: one the caller
        already holds (the LipSync deployment keeps its own per-replica cache)."""
        avatar = avatar or self.avatar(chunk.avatar_id)
        n = chunk.n_frames
        if chunk.visemes is None:
            from serve_app.engines.lipsync.visemes import visemes_from_audio

            visemes = visemes_from_audio(chunk.audio, n)
        else:
            visemes = chunk.visemes
        visemes = smooth_visemes((list(visemes) + ["X"] * n)[:n])
        w, h = avatar.size
        frames = np.empty((n, h, w, 3), np.uint8)
        for k, v in enumerate(visemes):
            avatar.frame(chunk.first_frame + k, v, out=frames[k])
        for k, weight in fade_weights(n, chunk.fade_in, chunk.fade_out):
            _blend_mouth(frames[k], avatar, chunk.first_frame + k, weight)
        return frames

    def render_batch(self, chunks: list[LipSyncChunk], avatars: list[Avatar]) -> list[np.ndarray]:
        return [self.render(c, a) for c, a in zip(chunks, avatars)]

    def idle_frame(self, avatar_id: str, index: int) -> np.ndarray:
        return self.avatar(avatar_id).idle_frame(index)

    def _candidates(self) -> list[str]:
        if not self.avatars_dir.is_dir():
            return []
        return sorted(p.name for p in self.avatars_dir.iterdir()
                      if AVATAR_ID.fullmatch(p.name) and (p / MANIFEST).is_file())


def fade_weights(n: int, fade_in: int, fade_out: int) -> list[tuple[int, float]]:
    """(frame, weight of the talking picture) for the frames that crossfade with idle."""
    weights: dict[int, float] = {}
    for k in range(min(fade_in, n)):
        weights[k] = (k + 1) / (fade_in + 1)
    for j in range(min(fade_out, n)):
        k = n - 1 - j
        weights[k] = min(weights.get(k, 1.0), (j + 1) / (fade_out + 1))
    return sorted(weights.items())


def _blend_mouth(frame: np.ndarray, avatar: Avatar, index: int, weight: float) -> None:
    """Mix the idle picture into `frame` inside the mouth box, where the two differ."""
    x0, y0, x1, y1 = avatar.mouth_box(index)
    idle = avatar.idle_frame(index)[y0:y1, x0:x1].astype(np.float32)
    talk = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.rint(idle + weight * (talk - idle)).astype(np.uint8)


MISSING = None  # folder_version of an avatar whose folder is gone


def folder_version(folder: Path) -> tuple[int, int] | None:
    """Changes when the avatar's folder is replaced (preparation renames a new one in). The
    inode alone is not enough: a file system reuses a deleted manifest's inode at once."""
    try:
        stat = (folder / MANIFEST).stat()
    except OSError:
        return MISSING
    return stat.st_ino, stat.st_mtime_ns


def approx_nbytes(avatar: Avatar) -> int:
    """Memory held by an avatar's arrays and encoded frames (what a cache slot costs)."""
    own = getattr(avatar, "nbytes", None)  # neural avatars count their crops and latents
    if own is not None:
        return own + approx_nbytes(avatar.face)
    total = 0
    for value in vars(avatar).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, np.ndarray):
                total += item.nbytes
            elif isinstance(item, (bytes, bytearray)):
                total += len(item)
    return total


def _load(folder: Path) -> Avatar:
    """The avatar class named by the manifest's "kind"; the class validates the rest."""
    try:
        kind = json.loads((folder / MANIFEST).read_text()).get("kind")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        kind = "sprite"  # let SpriteAvatar report what is wrong with the manifest
    if kind not in AVATAR_KINDS:
        raise ValueError(f"{folder / MANIFEST}: unknown 'kind' {kind!r}; expected one of "
                         f"{', '.join(AVATAR_KINDS)}")
    return AVATAR_KINDS[kind](folder)
