"""Sprite avatars: one base picture plus mouth and eye sprites, PNG-tuber style.

The folder format is documented in avatars/README.md. Rendering a frame is: paste the mouth
sprite (and the blink sprite when one is due) onto the base, then apply the idle motion as one
remap of the whole picture. Because the motion is applied after the paste and depends only on
the frame index, frames for the same index differ only where the mouth sprite lands.
"""
from __future__ import annotations

import json
import math
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np

from serve_app.engines.lipsync.base import FPS, VISEMES

MANIFEST = "manifest.json"
BLINK = ("half", "closed", "closed", "half")  # eye sprite per frame of one blink
NECK_BAND = 0.05  # fraction of the height over which the neck blends head motion into body motion


@dataclass(frozen=True)
class Sprite:
    """An RGBA patch ready to blend: colour premultiplied by alpha, and 1 - alpha."""

    x0: int
    y0: int
    color: np.ndarray  # float32 (h, w, 3), premultiplied, +0.5 so truncation rounds
    keep: np.ndarray  # float32 (h, w, 1)

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.keep.shape[:2]
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    def blend_into(self, img: np.ndarray) -> None:
        x0, y0, x1, y1 = self.box
        region = img[y0:y1, x0:x1]
        region[:] = region * self.keep + self.color


@dataclass(frozen=True)
class Idle:
    """Idle motion and blink timing; see avatars/README.md for each field."""

    sway_px: float
    bob_px: float
    tilt_deg: float
    period_s: float
    neck: tuple[float, float]
    blink_every_s: tuple[float, float]


def read_manifest(folder: Path, kinds: tuple[str, ...]) -> dict:
    """An avatar folder's manifest.json with the fields every kind shares checked (format,
    kind, id, fps); a problem raises ValueError naming the file."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None

    def fail(problem: str) -> NoReturn:
        raise ValueError(f"{path}: {problem}")

    if not isinstance(m, dict):
        fail("must hold a JSON object")
    if m.get("format") != 1:
        fail(f"'format' must be 1, got {m.get('format')!r}")
    if m.get("kind") not in kinds:
        expected = " or ".join(f'"{k}"' for k in kinds)
        fail(f"'kind' must be {expected}, got {m.get('kind')!r}")
    if m.get("id", folder.name) != folder.name:
        fail(f"'id' is {m['id']!r} but the folder is named {folder.name!r}; make them match")
    if m.get("fps", FPS) != FPS:
        fail(f"'fps' must be {FPS}, got {m['fps']!r}")
    return m


class SpriteAvatar:
    """A sprite avatar loaded from its folder; renders frames for any clock index."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.id = self.folder.name
        self._manifest_path = self.folder / MANIFEST
        m = read_manifest(self.folder, ("sprite",))
        self.name = str(m.get("name", self.id))
        self.voice = m.get("voice")

        base = self._image(self._required(m, "base"), "base")
        self._base = np.ascontiguousarray(base[..., :3])
        h, w = self._base.shape[:2]
        self.size = (w, h)
        if "size" in m and m["size"] != [w, h]:
            self._fail(f"'size' is {m['size']} but {m['base']} is {w}x{h}")

        mouths = self._required(m, "mouths")
        if not isinstance(mouths, dict):
            self._fail("'mouths' must map each viseme to a PNG file")
        missing = [v for v in VISEMES if v not in mouths]
        if missing:
            self._fail(f"'mouths' lacks viseme(s) {', '.join(missing)} "
                       f"(all of {' '.join(VISEMES)} are needed)")
        unknown = sorted(set(mouths) - set(VISEMES))
        if unknown:
            self._fail(f"'mouths' has unknown viseme(s) {', '.join(unknown)}")
        anchor = self._anchor(m, "mouth_anchor")
        self._mouths = {v: self._sprite(mouths[v], f"mouths.{v}", anchor) for v in VISEMES}
        boxes = np.array([s.box for s in self._mouths.values()])
        self._mouth_src = tuple(int(v) for v in (*boxes[:, :2].min(0), *boxes[:, 2:].max(0)))

        self._eyes: dict[str, Sprite] = {}
        eyes = m.get("eyes")
        if eyes is not None:
            if not isinstance(eyes, dict) or "closed" not in eyes:
                self._fail("'eyes' must name at least a \"closed\" sprite")
            anchor = self._anchor(m, "eyes_anchor")
            closed = self._sprite(eyes["closed"], "eyes.closed", anchor)
            half = self._sprite(eyes["half"], "eyes.half", anchor) if "half" in eyes else closed
            self._eyes = {"closed": closed, "half": half}

        self.thumbnail_path: Path | None = None
        if m.get("thumbnail"):
            self.thumbnail_path = self._file(m["thumbnail"], "thumbnail")

        self.idle = self._idle(m.get("idle") or {})
        self._blink_seed = zlib.crc32(self.id.encode())
        # Head weight per row: 1 above the neck, 0 below it, a smooth ramp in between.
        band = max(NECK_BAND * h, 1.0)
        t = np.clip((self.idle.neck[1] + band - np.arange(h, dtype=np.float32)) / (2 * band), 0, 1)
        self._head_w = t * t * (3 - 2 * t)
        self._xs = np.arange(w, dtype=np.float32)
        self._ys = np.arange(h, dtype=np.float32)
        tilt = math.radians(abs(self.idle.tilt_deg)) * max(w, h)
        self._max_shift = math.ceil(abs(self.idle.sway_px) + 1.5 * abs(self.idle.bob_px) + tilt) + 2
        self._local = threading.local()  # per-thread scratch buffers, see _scratch()

    # ---- rendering ----

    def frame(self, index: int, viseme: str, out: np.ndarray | None = None) -> np.ndarray:
        """The frame for clock ``index`` with mouth ``viseme``: uint8 RGB (H, W, 3), a new array
        (or ``out``, when given, filled in place)."""
        mouth = self._mouths.get(viseme)
        if mouth is None:
            raise ValueError(f"unknown viseme {viseme!r}; expected one of {' '.join(VISEMES)}")
        img, map_x, map_y = self._scratch()
        np.copyto(img, self._base)
        mouth.blend_into(img)
        eyes = self.eyes_at(index)
        if eyes:
            self._eyes[eyes].blend_into(img)
        w, h = self.size
        self._maps(index, 0, 0, w, h, out=(map_x, map_y))
        return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, dst=out,
                         borderMode=cv2.BORDER_REFLECT)

    def _scratch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-thread working buffers: reusing them saves ~1 ms a frame of page faults that
        fresh megabyte-sized allocations cost."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            w, h = self.size
            bufs = self._local.bufs = (np.empty((h, w, 3), np.uint8), np.empty((h, w), np.float32),
                                       np.empty((h, w), np.float32))
        return bufs

    def idle_frame(self, index: int) -> np.ndarray:
        return self.frame(index, "X")

    def eyes_at(self, index: int) -> str | None:
        """The eye sprite due at ``index`` ("half" / "closed"), or None when the eyes are open.

        Blink k starts at a pseudo-random offset inside the k-th slot of the mean blink interval,
        so consecutive blinks are ``blink_every_s`` apart and any index is answered in O(1).
        """
        if not self._eyes:
            return None
        lo, hi = self.idle.blink_every_s
        slot = round((lo + hi) / 2 * FPS)
        jitter = round((hi - lo) / 2 * FPS)  # slot - jitter ~ lo * FPS: blinks never overlap slots
        k = index // slot
        phase = index - k * slot - _mix(self._blink_seed, k) % (jitter + 1)
        return BLINK[phase] if 0 <= phase < len(BLINK) else None

    def mouth_box(self, index: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive ends: the only pixels of frame ``index`` that depend on
        the viseme. It is where the union of the mouth sprites lands after that frame's motion,
        plus a pixel of margin for interpolation."""
        w, h = self.size
        sx0, sy0, sx1, sy1 = self._mouth_src
        m = self._max_shift
        rx0, ry0, rx1, ry1 = max(sx0 - m, 0), max(sy0 - m, 0), min(sx1 + m, w), min(sy1 + m, h)
        map_x, map_y = self._maps(index, rx0, ry0, rx1, ry1)
        # bilinear sampling at map (x, y) reads pixels floor(x) .. floor(x) + 1
        hit = (map_x > sx0 - 1) & (map_x < sx1) & (map_y > sy0 - 1) & (map_y < sy1)
        ys, xs = np.nonzero(hit)
        return (max(int(rx0 + xs.min()) - 1, 0), max(int(ry0 + ys.min()) - 1, 0),
                min(int(rx0 + xs.max()) + 2, w), min(int(ry0 + ys.max()) + 2, h))

    def _maps(self, index: int, x0: int, y0: int, x1: int, y1: int,
              out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps (where each output pixel samples the source) for part of a frame.

        Breathing lifts the whole picture; above the neck the head also sways, nods and tilts
        about the neck. Incommensurate periods keep the motion from looking like a loop.
        """
        idle = self.idle
        t = 2 * math.pi * index / (FPS * idle.period_s)
        lift = idle.bob_px * 0.5 * (1 - math.cos(t))
        sway = idle.sway_px * math.sin(t / 1.7 + 0.6)
        nod = 0.4 * idle.bob_px * math.sin(t / 2.3 + 1.9)
        tilt = math.radians(idle.tilt_deg) * math.sin(t / 2.9 + 0.3)
        px, py = idle.neck
        ys, xs, hw = self._ys[y0:y1], self._xs[x0:x1], self._head_w[y0:y1]
        # Output p samples p - d(p), where the motion is
        # d = (0, -lift) + w(y) * (sway - tilt * (y - py), nod + tilt * (x - px)).
        if out is None:
            out = (np.empty((len(ys), len(xs)), np.float32),
                   np.empty((len(ys), len(xs)), np.float32))
        map_x, map_y = out
        np.add(xs[None, :], (-hw * (sway - tilt * (ys - py)))[:, None], out=map_x)
        np.multiply((-hw * tilt)[:, None], xs[None, :], out=map_y)
        map_y += (ys + lift - hw * (nod - tilt * px))[:, None]
        return map_x, map_y

    # ---- loading helpers ----

    def _fail(self, problem: str) -> NoReturn:
        raise ValueError(f"{self._manifest_path}: {problem}")

    def _required(self, m: dict, key: str):
        if key not in m:
            self._fail(f"missing required field {key!r}")
        return m[key]

    def _file(self, name: object, field: str) -> Path:
        if not isinstance(name, str) or not name:
            self._fail(f"{field!r} must be a file name")
        path = (self.folder / name).resolve()
        if self.folder.resolve() not in path.parents:
            self._fail(f"{field!r} names {name!r}, which is outside the avatar folder")
        if not path.is_file():
            raise ValueError(f"{path}: file not found "
                             f"(named by {field!r} in {self._manifest_path})")
        return path

    def _image(self, name: object, field: str) -> np.ndarray:
        path = self._file(name, field)
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: not a readable image")
        if img.dtype != np.uint8:
            raise ValueError(f"{path}: must be an 8-bit image, got {img.dtype}")
        if img.ndim == 2:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)

    def _anchor(self, m: dict, key: str) -> tuple[int, int]:
        a = self._required(m, key)
        if not (isinstance(a, list) and len(a) == 2 and all(isinstance(v, int) for v in a)):
            self._fail(f"{key!r} must be [x, y] in whole pixels, got {a!r}")
        w, h = self.size
        if not (0 <= a[0] < w and 0 <= a[1] < h):
            self._fail(f"{key!r} {a} lies outside the {w}x{h} base image")
        return a[0], a[1]

    def _sprite(self, name: object, field: str, anchor: tuple[int, int]) -> Sprite:
        img = self._image(name, field)
        sh, sw = img.shape[:2]
        x0, y0 = anchor[0] - sw // 2, anchor[1] - sh // 2
        w, h = self.size
        if x0 < 0 or y0 < 0 or x0 + sw > w or y0 + sh > h:
            raise ValueError(f"{self.folder / name}: a {sw}x{sh} sprite centred at {list(anchor)} "
                             f"does not fit inside the {w}x{h} base image")
        rgb = img[..., :3].astype(np.float32)
        if img.shape[2] == 4:
            alpha = img[..., 3:].astype(np.float32) / 255
        else:
            alpha = np.ones((sh, sw, 1), np.float32)
        return Sprite(x0, y0, rgb * alpha + 0.5, 1 - alpha)

    def _idle(self, d: dict) -> Idle:
        if not isinstance(d, dict):
            self._fail("'idle' must be an object")
        w, h = self.size
        known = {"sway_px", "bob_px", "tilt_deg", "period_s", "neck", "blink_every_s"}
        unknown = sorted(set(d) - known)
        if unknown:
            self._fail(f"'idle' has unknown field(s) {', '.join(unknown)}")
        try:
            idle = Idle(
                sway_px=float(d.get("sway_px", 2.0)),
                bob_px=float(d.get("bob_px", 1.5)),
                tilt_deg=float(d.get("tilt_deg", 0.5)),
                period_s=float(d.get("period_s", 4.0)),
                neck=tuple(float(v) for v in d.get("neck", (w / 2, h * 0.75))),
                blink_every_s=tuple(float(v) for v in d.get("blink_every_s", (2.5, 5.5))),
            )
        except (TypeError, ValueError):
            self._fail(f"'idle' fields must be numbers (neck and blink_every_s: two numbers), "
                       f"got {d}")
        if len(idle.neck) != 2 or len(idle.blink_every_s) != 2:
            self._fail("'idle.neck' and 'idle.blink_every_s' must each be two numbers")
        if idle.period_s <= 0:
            self._fail("'idle.period_s' must be > 0")
        if max(abs(idle.sway_px), abs(idle.bob_px)) > 0.05 * h or abs(idle.tilt_deg) > 5:
            self._fail("idle motion is meant to be subtle: sway_px and bob_px at most 5% of the "
                       "height, tilt_deg at most 5")
        lo, hi = idle.blink_every_s
        if not 0.5 <= lo <= hi:
            self._fail(f"'idle.blink_every_s' must be [min, max] seconds with "
                       f"0.5 <= min <= max, got {[lo, hi]}")
        return idle


def _mix(seed: int, n: int) -> int:
    """A deterministic 64-bit hash (splitmix64) of (seed, n), the same in every process."""
    z = (seed * 0x9E3779B97F4A7C15 + n * 0xBF58476D1CE4E5B9 + 0x632BE59BD9B4E019) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return z ^ (z >> 31)
