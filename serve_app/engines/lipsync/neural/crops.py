"""Face crops for neural lip-sync: where the model's square input is cut from each avatar
frame, and the soft mask that blends its output back. Shared by avatar preparation (which
stores them) and the engines (which recompute them for avatars prepared without them).
numpy and OpenCV only: preparation must not need torch."""
from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 256  # stored crops; Wav2Lip-96 scales them down
LATENTS_FILE = "neural/musetalk_latents.npy"  # MuseTalk reference latents, when stored
CHIN_PAD = 0.12  # Haar boxes stop near the chin; the models were trained on boxes below it


def crop_boxes(face_boxes: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(n, 4) boxes x0, y0, x1, y1 (exclusive) around each face, reaching below the chin as
    Wav2Lip's and MuseTalk's face crops do, clipped to the frame."""
    w, h = frame_size
    b = np.asarray(face_boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 3] += CHIN_PAD * (b[:, 3] - b[:, 1])
    b = np.round(b).astype(int)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    if np.any(b[:, 2] - b[:, 0] < 8) or np.any(b[:, 3] - b[:, 1] < 8):
        raise ValueError("a face box is smaller than 8x8 pixels inside the frame")
    return b


def cut_crop(frame: np.ndarray, box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The box of `frame` scaled to size x size (the models' input)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    patch = frame[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)


def lower_face_mask(size: int = CROP_SIZE) -> np.ndarray:
    """float32 (size, size) in [0, 1]: 1 over mouth, jaw and chin, 0 above the nose and at the
    crop's edges, feathered so the generated lower face blends into the frame without seams."""
    m = np.zeros((size, size), np.float32)
    inset = round(0.08 * size)
    m[round(0.60 * size) : size - inset, inset : size - inset] = 1.0  # the blur reaches ~0.06 up
    k = (round(0.12 * size) // 2) * 2 + 1
    return cv2.GaussianBlur(m, (k, k), 0)


def paste(frame: np.ndarray, face: np.ndarray, box: np.ndarray, mask: np.ndarray) -> None:
    """Blend `face` (a generated crop, same colour order as `frame`) into `frame` at `box`,
    in place, weighted by `mask` (crop coordinates)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    size = (x1 - x0, y1 - y0)
    gen = cv2.resize(face, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    m = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.rint(region + m * (gen - region)).astype(np.uint8)
