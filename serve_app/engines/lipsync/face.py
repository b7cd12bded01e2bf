"""Photo and video avatars: a real face, its mouth shaped per viseme without any model.

The folder format is documented in avatars/README.md and written by serve_app.avatars.prepare.
Idle frames ping-pong through the stored frames (a photo is one still frame that blinks, see
blink.py). A talking frame
is the idle frame with only its mouth box changed: the lower lip and chin are pulled down by a
remap, a dark inner mouth (with a hint of upper teeth) fills the opening, and the result is
blended in through the feathered mask, which is exactly 0 on the box's edges. So talking and
idle frames of the same index differ only inside ``mouth_box(index)``.
"""
from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np

from serve_app.engines.lipsync import mouth_warp
from serve_app.engines.lipsync.base import VISEMES
from serve_app.engines.lipsync.blink import Blinker
from serve_app.engines.lipsync.sprite import MANIFEST, read_manifest

# Per viseme: (openness 0..1, mouth width factor). X and A are the closed rest mouth.
SHAPES = {"A": (0.0, 1.0), "B": (0.25, 1.05), "C": (0.55, 1.0), "D": (1.0, 1.02),
          "E": (0.5, 0.92), "F": (0.4, 0.72), "G": (0.15, 1.0), "H": (0.3, 0.95),
          "X": (0.0, 1.0)}
JAW_DROP = 0.75  # fully open ("D"): the lower lip drops this many mouth half-widths
INNER = np.array([52, 18, 22], np.float32)  # RGB of the dark inside of the mouth
LANDMARKS = 468  # face-mesh points per frame
MAX_WARPS = 256  # landmark warps kept per avatar (~0.3 MB each at 512x512)


class FaceAvatar:
    """A photo or video avatar loaded from its folder; renders frames for any clock index."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.id = self.folder.name
        self._manifest_path = self.folder / MANIFEST
        m = read_manifest(self.folder, ("photo", "video"))
        self.manifest = m  # neural engines read their entries from it
        self.kind = m["kind"]
        self.name = str(m.get("name", self.id))
        self.voice = m.get("voice")
        try:
            w, h = (int(v) for v in m["size"])
            n = int(m["n_frames"])
            boxes = np.array(m["mouth_boxes"], dtype=int).reshape(-1, 4)
            mx, my, half_width = (int(v) for v in m["mouth"])
        except (KeyError, TypeError, ValueError) as e:
            self._fail(f"'size', 'n_frames', 'mouth_boxes' and 'mouth' are required and must "
                       f"be numbers ({type(e).__name__}: {e})")
        self.size = (w, h)
        if n < 1 or len(boxes) != n:
            self._fail(f"'mouth_boxes' must hold one box per frame ({n}), got {len(boxes)}")
        bw, bh = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
        if np.any(boxes[:, 2:] - boxes[:, :2] != [bw, bh]) or bw < 4 or bh < 4:
            self._fail("'mouth_boxes' must all have the same size, at least 4x4")
        if np.any(boxes[:, :2] < 0) or np.any(boxes[:, 2] > w) or np.any(boxes[:, 3] > h):
            self._fail(f"'mouth_boxes' must lie inside the {w}x{h} frame")
        self._boxes = boxes

        frames_dir = self._file(m.get("frames", "frames"), "frames", directory=True)
        files = sorted(frames_dir.glob("*.jpg"))
        if len(files) != n:
            self._fail(f"'n_frames' is {n} but {frames_dir} holds {len(files)} .jpg files")
        # Frames stay JPEG-compressed in memory (~40 kB each) and are decoded when needed.
        self._jpegs = [np.fromfile(f, np.uint8) for f in files]
        first = self._decode(0)
        if first.shape != (h, w, 3):
            raise ValueError(f"{files[0]}: is {first.shape[1]}x{first.shape[0]}, "
                             f"but 'size' is {w}x{h}")
        mask_path = self._file(m.get("mask", "mask.png"), "mask")
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None or mask.shape != (bh, bw):
            raise ValueError(f"{mask_path}: must be a {bw}x{bh} greyscale image, the size of "
                             "the mouth boxes")
        self._blinker = self._load_blinker(m.get("eye_boxes"), w, h)
        self._mask = mask.astype(np.float32) / 255
        self._landmarks = self._load_landmarks(m.get("landmarks"), n, w, h)
        try:  # frames whose face could not be read (a hand over it): their mouth stays as filmed
            self._hidden = frozenset(int(i) for i in m.get("landmarks_hidden", []))
        except (TypeError, ValueError):
            self._fail("'landmarks_hidden' must be a list of frame indices")
        # Without landmarks (avatars prepared before them): one box-shaped warp per viseme.
        self._shapes = {v: _shape(self._mask, mx, my, half_width, *SHAPES[v])
                        for v in VISEMES if SHAPES[v][0] > 0} if self._landmarks is None else {}
        self._warps: OrderedDict[tuple[int, str], mouth_warp.Warped | None] = OrderedDict()
        self._warps_lock = threading.Lock()
        self.thumbnail_path: Path | None = None
        if m.get("thumbnail"):
            self.thumbnail_path = self._file(m["thumbnail"], "thumbnail")
        self._local = threading.local()  # per-thread last decoded frame, see _idle()

    @property
    def n_frames(self) -> int:
        return len(self._jpegs)

    # ---- rendering ----

    def source_index(self, index: int) -> int:
        """The stored frame shown at clock ``index``: forwards, then backwards, and again, so the
        loop never jumps."""
        n = self.n_frames
        if n == 1:
            return 0
        i = index % (2 * n - 2)
        return i if i < n else 2 * n - 2 - i

    def frame(self, index: int, viseme: str | None, out: np.ndarray | None = None) -> np.ndarray:
        """The frame for clock ``index`` with mouth ``viseme`` (None: the idle frame, mouth as
        stored): uint8 RGB (H, W, 3), a new array (or ``out``, when given, filled in place).
        With landmarks, "X" while talking is the relaxed closed mouth: a smile stored open
        closes between words, and opens again when idle."""
        if viseme is not None and viseme not in SHAPES:
            raise ValueError(f"unknown viseme {viseme!r}; expected one of {' '.join(VISEMES)}")
        src = self.source_index(index)
        idle = self._idle(src)
        if self._blinker is not None:
            idle = self._blinker.apply(idle, index)
        if out is None:
            out = idle.copy()
        else:
            np.copyto(out, idle)
        x0, y0, x1, y1 = self._boxes[src]
        if viseme is None:
            shape = None
        elif self._landmarks is not None:
            shape = self._warp(src, viseme, idle[y0:y1, x0:x1])
        else:
            shape = self._shapes.get(viseme)
        if shape is not None:
            out[y0:y1, x0:x1] = mouth_warp.render(idle[y0:y1, x0:x1], shape)
        return out

    def _warp(self, src: int, viseme: str, patch: np.ndarray) -> mouth_warp.Warped | None:
        """The landmark warp of stored frame `src` for `viseme`, kept for the frames used
        lately (a photo's eight shapes stay; a clip's are made as its frames come round)."""
        if src in self._hidden:
            return None
        key = (src, viseme)
        with self._warps_lock:
            if key in self._warps:
                self._warps.move_to_end(key)
                return self._warps[key]
        x0, y0 = self._boxes[src][:2]
        shape = mouth_warp.build(patch, self._mask, self._landmarks[src] - (x0, y0), viseme)
        with self._warps_lock:
            self._warps[key] = shape
            while len(self._warps) > MAX_WARPS:
                self._warps.popitem(last=False)
        return shape

    def idle_frame(self, index: int) -> np.ndarray:
        return self.frame(index, None)

    def stored_frame(self, src: int) -> np.ndarray:
        """Stored frame ``src`` as prepared (no blink), for model inputs; do not modify it."""
        return self._idle(src)

    def mouth_box(self, index: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive ends: the only pixels of frame ``index`` that depend on
        the viseme."""
        return tuple(int(v) for v in self._boxes[self.source_index(index)])

    def _idle(self, src: int) -> np.ndarray:
        """Stored frame ``src``, decoded; the last one is kept per thread because a frame is
        often asked for twice (idle, then talking) and a photo always shows the same one."""
        cached = getattr(self._local, "frame", None)
        if cached is None or cached[0] != src:
            cached = self._local.frame = (src, self._decode(src))
        return cached[1]

    def _decode(self, src: int) -> np.ndarray:
        img = cv2.imdecode(self._jpegs[src], cv2.IMREAD_COLOR_RGB)
        if img is None:
            raise ValueError(f"{self.folder}: frame {src} is not a readable JPEG")
        return img

    # ---- loading helpers ----

    def _load_blinker(self, eye_boxes: object, w: int, h: int) -> Blinker | None:
        """Photos blink where preparation found the eyes (older photo avatars have none)."""
        if eye_boxes is None:
            return None
        if self.kind != "photo":
            self._fail("'eye_boxes' is for photo avatars (a video has its own blinks)")
        try:
            boxes = np.array(eye_boxes, dtype=int).reshape(2, 4)
        except (TypeError, ValueError):
            self._fail("'eye_boxes' must be two boxes [x0, y0, x1, y1]")
        if np.any(boxes[:, 2:] - boxes[:, :2] < 4) or np.any(boxes < 0) \
                or np.any(boxes[:, 2] > w) or np.any(boxes[:, 3] > h):
            self._fail(f"'eye_boxes' must be at least 4x4 and inside the {w}x{h} frame")
        return Blinker(boxes.tolist(), seed=zlib.crc32(self.id.encode()))

    def _load_landmarks(self, name: object, n: int, w: int, h: int) -> np.ndarray | None:
        """Face-mesh points per stored frame (float32 (n, 468, 2), frame pixels), when
        preparation found them (avatars/README.md)."""
        if name is None:
            return None
        path = self._file(name, "landmarks")
        try:
            points = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            self._fail(f"'landmarks' {name!r} is not a readable .npy file ({exc})")
        if points.shape != (n, LANDMARKS, 2) or not np.isfinite(points).all():
            self._fail(f"'landmarks' must hold ({n}, {LANDMARKS}, 2) finite points, got {points.shape}")
        if points.min() < -w or points.max() > 2 * max(w, h):
            self._fail("'landmarks' lie far outside the frame")
        return points.astype(np.float32)

    def _fail(self, problem: str) -> NoReturn:
        raise ValueError(f"{self._manifest_path}: {problem}")

    def _file(self, name: object, field: str, directory: bool = False) -> Path:
        if not isinstance(name, str) or not name:
            self._fail(f"{field!r} must be a file name")
        path = (self.folder / name).resolve()
        if self.folder.resolve() not in path.parents:
            self._fail(f"{field!r} names {name!r}, which is outside the avatar folder")
        if not (path.is_dir() if directory else path.is_file()):
            raise ValueError(f"{path}: {'folder' if directory else 'file'} not found "
                             f"(named by {field!r} in {self._manifest_path})")
        return path


def _shape(mask: np.ndarray, mx: int, my: int, half_width: int, openness: float,
           width: float) -> mouth_warp.Warped:
    """The warp and inner-mouth overlay for one viseme, in mouth-box pixels; the lips' centre
    is at (mx, my)."""
    h, w = mask.shape
    drop = JAW_DROP * half_width * openness  # how far the lower lip moves down
    lift = 0.2 * drop  # the upper lip rises a little too
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    # Around the mouth (fading out sideways) the jaw drops: below the lips, output row y shows
    # source row y - drop, tapering to no shift at the box's bottom; above, rows move up a bit.
    side = np.clip(1 - ((xs - mx) / (1.6 * half_width)) ** 2, 0, 1)
    below = np.clip((h - ys) / max(h - my, 1), 0, 1)
    above = np.clip(ys / max(my, 1), 0, 1) ** 2
    shift = np.where(ys >= my, -drop * below, lift * above) * side
    # Narrow (F, E) or widen the lips about the centre, strongest at the lips' height.
    near = np.exp(-((ys - my) / (0.6 * half_width)) ** 2)
    scale = 1 + (width - 1) * near * side
    map_x = (mx + (xs - mx) / scale).astype(np.float32)
    map_y = (ys + shift).astype(np.float32)

    # The opening: a soft dark ellipse between the lips; the real teeth move with the lips.
    alpha = np.zeros((h, w), np.float32)
    half_h = 0.5 * (drop + lift) * 0.85
    centre_y = my + 0.5 * (drop - lift)
    if half_h >= 0.5:
        axes = (max(round(0.62 * half_width * width * 16), 16), round(half_h * 16))
        cv2.ellipse(alpha, (round(mx * 16), round(centre_y * 16)), axes, 0, 0, 360, 0.92, -1,
                    cv2.LINE_AA, shift=4)
        alpha = cv2.GaussianBlur(alpha, (5, 5), 0)
    m = mask[..., None]
    a = alpha[..., None]
    return mouth_warp.Warped(map_x, map_y, keep=1 - m, mix=m * (1 - a), add=m * a * INNER + 0.5)
