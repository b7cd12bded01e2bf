"""Blinks for photo avatars: a still photo that never blinks looks dead.

Preparation finds the eyes (`find_eyes`); at render time `Blinker` closes them for a few
frames every few seconds. Closing is a remap of each eye box that pulls the skin above the eye
down over it (the upper lid) and leaves the lower lash line, blended through a feathered
ellipse, so nothing outside the eye boxes changes. Which frames blink depends only on the
clock index, so idle and talking frames of the same index agree.
"""
from __future__ import annotations

import cv2
import numpy as np

from serve_app.engines.lipsync.sprite import _mix

# Closedness of the eyes over one blink, a frame (40 ms) each: down fast, up slower.
BLINK = (0.55, 1.0, 1.0, 0.6, 0.25)
# Blinks start once per window of this many frames, at a pseudo-random frame in its first
# part: people blink every 2-10 s.
WINDOW_FRAMES = 110  # 4.4 s
LID_LINE = 0.70  # where the closed lid meets the lower lashes, as a fraction of the box height
LID_TRAVEL = 0.46  # how far the skin above the eye moves down when fully closed (box heights)


def find_eyes(bgr: np.ndarray, face: np.ndarray) -> list[list[int]] | None:
    """Two eye boxes [x0, y0, x1, y1] (left, right in the image) inside `face` (x0, y0, x1, y1),
    or None if OpenCV's eye cascade does not find one in each half of the face's upper part."""
    x0, y0, x1, y1 = (int(v) for v in face)
    fw = x1 - x0
    gray = cv2.cvtColor(bgr[y0 : y0 + int(0.6 * (y1 - y0)), x0:x1], cv2.COLOR_BGR2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(int(0.12 * fw),) * 2,
                                     maxSize=(int(0.4 * fw),) * 2)
    eyes = []
    for half in (0, 1):  # the largest detection in each half of the face
        side = [e for e in found if (e[0] + e[2] / 2 >= fw / 2) == bool(half)]
        if not side:
            return None
        ex, ey, ew, eh = max(side, key=lambda e: e[2] * e[3])
        eyes.append([x0 + int(ex), y0 + int(ey), x0 + int(ex + ew), y0 + int(ey + eh)])
    return eyes


class Blinker:
    """Closes the eyes of frames at blink indices; `seed` varies the rhythm per avatar."""

    def __init__(self, eye_boxes: list[list[int]], seed: int) -> None:
        self.boxes = [tuple(int(v) for v in box) for box in eye_boxes]
        self._seed = seed
        self._warps = {}  # eye size -> (map_x, map_y per closedness, mask)

    def closedness(self, index: int) -> float:
        window, at = divmod(index, WINDOW_FRAMES)
        start = _mix(self._seed, window) % (WINDOW_FRAMES - len(BLINK) - 30)
        k = at - start
        return BLINK[k] if 0 <= k < len(BLINK) else 0.0

    def apply(self, frame: np.ndarray, index: int) -> np.ndarray:
        """`frame` itself when the eyes are open at `index`, else a copy with them closed."""
        c = self.closedness(index)
        if c == 0.0:
            return frame
        out = frame.copy()
        for x0, y0, x1, y1 in self.boxes:
            patch = frame[y0:y1, x0:x1].astype(np.float32)
            map_x, map_y, mask = self._warp(x1 - x0, y1 - y0, c)
            closed = cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            out[y0:y1, x0:x1] = (patch * (1 - mask) + closed * mask).astype(np.uint8)
        return out

    def _warp(self, w: int, h: int, c: float):
        key = (w, h, c)
        if key not in self._warps:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            lid, travel = LID_LINE * h, LID_TRAVEL * h * c
            # Rows above the lid line sample from higher up, more the lower they are (the lid's
            # skin stretches down); below it the pull fades out to the box's bottom edge.
            pull = np.where(yy <= lid, yy / lid * travel, travel * (h - yy) / (h - lid))
            mask = np.zeros((h, w), np.float32)
            cv2.ellipse(mask, (w // 2, int(0.55 * h)), (int(0.42 * w), int(0.36 * h)), 0, 0, 360, 1.0, -1)
            mask = cv2.GaussianBlur(mask, (0, 0), max(w, h) / 10)
            edge = np.minimum.reduce([xx, yy, w - 1 - xx, h - 1 - yy])
            mask *= np.clip(edge / 2, 0, 1)  # exactly 0 on the box's border
            self._warps[key] = (xx, (yy - pull).astype(np.float32), mask[..., None])
        return self._warps[key]
