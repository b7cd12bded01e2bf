"""MediaPipe's 468-point face mesh without the mediapipe runtime.

The two models ship inside the ``mediapipe==0.10.21`` wheel (0.10.30+ ship none), installed with
``--no-deps`` because its runtime pins numpy<2; they run on ``ai-edge-litert``. The package is
only located, never imported. The pre- and post-processing follows MediaPipe's graphs
(face_detection_short_range.pbtxt, face_detection_front_detection_to_roi.pbtxt,
face_landmark_cpu.pbtxt): BlazeFace finds the face, its eye keypoints set the crop's roll, and
the mesh model runs on a square crop 1.5x the face box.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

INSTALL_HINT = ("install the model files with `pip install --no-deps mediapipe==0.10.21` and the "
                "runtime with `pip install ai-edge-litert`")


class LandmarkModelMissing(RuntimeError):
    """The face models or their runtime are missing or unreadable."""


# Canonical face-mesh indices (mediapipe/python/solutions/face_mesh_connections.py). "Right"
# is the subject's right, which is on the image's left in an unmirrored photo.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)  # outer corners (subject's right, left)
INNER_LIP_TOP, INNER_LIP_BOTTOM = 13, 14  # middle of the inner lip contour
# From the right ear, along the jaw, through the chin (152), to the left ear.
JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
       377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
CHIN = 152
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
EYE_OUTER_CORNERS = (33, 263)

_DETECT_SIZE, _MESH_SIZE = 128, 192
_MIN_SCORE, _NMS_IOU = 0.5, 0.3  # face_detection_short_range.pbtxt, face_detection.pbtxt
_ROI_SCALE = 1.5  # face_detection_front_detection_to_roi.pbtxt
DETECTOR_FILE = "modules/face_detection/face_detection_short_range.tflite"
MESH_FILE = "modules/face_landmark/face_landmark.tflite"


def _anchors() -> np.ndarray:
    """BlazeFace's 896 SSD anchor centres (x, y) in [0, 1]: strides 8,16,16,16 with 2 anchors
    per layer and cell; the three stride-16 layers share a 8x8 grid (6 per cell), so 16*16*2 +
    8*8*6 = 896. The anchor sizes are fixed at 1, so only the centres matter."""
    out = []
    for grid, per_cell in ((_DETECT_SIZE // 8, 2), (_DETECT_SIZE // 16, 6)):
        c = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        xy = np.stack(np.meshgrid(c, c), axis=-1).reshape(-1, 2)  # row by row, as MediaPipe
        out.append(np.repeat(xy, per_cell, axis=0))
    return np.concatenate(out)


def _wheel_model(relative: str) -> Path:
    # find_spec on a top-level package reads its location without running its __init__.
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkModelMissing(f"mediapipe's model files are not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _load(path: str | Path, threads: int, shape: tuple[int, ...]):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise LandmarkModelMissing(f"ai-edge-litert is not installed ({e}): {INSTALL_HINT}") from e
    if not Path(path).is_file():
        raise LandmarkModelMissing(f"face model {path} not found: {INSTALL_HINT}")
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:  # LiteRT's verifier rejects a corrupt file
        raise LandmarkModelMissing(f"face model {path} is unreadable ({e}): {INSTALL_HINT}") from e
    got = tuple(int(n) for n in interp.get_input_details()[0]["shape"])
    if got != shape:  # e.g. the two files swapped
        raise LandmarkModelMissing(f"face model {path} takes {got}, not {shape}: {INSTALL_HINT}")
    return interp


@dataclass(frozen=True)
class Face:
    """A face box in image pixels. ``keypoints`` are BlazeFace's six (x, y): right eye, left eye,
    nose tip, mouth centre, right ear, left ear. ``roll`` (radians) tilts the landmark crop;
    ``yaw`` is -1..1, 0 facing the camera, > 0 when the nose is nearer the ear on the image's
    right (the head turned towards image right)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    roll: float = 0.0
    yaw: float = 0.0
    keypoints: np.ndarray | None = field(default=None, compare=False)  # (6, 2)


class FaceMesh:
    """Loads both models once. Calls are serialised: a LiteRT interpreter is not thread-safe.
    One thread per model was faster than two on a busy 2-core machine."""

    def __init__(self, detector_model: str | Path | None = None,
                 mesh_model: str | Path | None = None, threads: int = 1):
        self._detector = _load(detector_model or _wheel_model(DETECTOR_FILE), threads,
                               (1, _DETECT_SIZE, _DETECT_SIZE, 3))
        self._mesh = _load(mesh_model or _wheel_model(MESH_FILE), threads,
                           (1, _MESH_SIZE, _MESH_SIZE, 3))
        self._anchors = _anchors()
        self._lock = threading.Lock()

    def _run(self, interp, x: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            interp.set_tensor(interp.get_input_details()[0]["index"], x[None])
            interp.invoke()
            return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, best first. The short-range model wants faces at
        selfie distance: narrower than ~1/8 of the image's longer side, they are missed."""
        h, w = rgb.shape[:2]
        # Letterbox to a square (as MediaPipe does); INTER_AREA keeps big frames from aliasing.
        scale = _DETECT_SIZE / max(h, w)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        px, py = (_DETECT_SIZE - rw) // 2, (_DETECT_SIZE - rh) // 2
        square = np.zeros((_DETECT_SIZE, _DETECT_SIZE, 3), np.uint8)
        square[py:py + rh, px:px + rw] = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA)
        # The detector takes [-1, 1] (face_detection.pbtxt: output_tensor_float_range).
        raw, logits = self._run(self._detector, square.astype(np.float32) / 127.5 - 1.0)
        raw = raw[0] / _DETECT_SIZE
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100, 100)))
        keep = scores >= _MIN_SCORE
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        centre = raw[:, :2] + anchors
        boxes = np.concatenate([centre - raw[:, 2:4] / 2, centre + raw[:, 2:4] / 2], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        # Back from the letterboxed square to image pixels.
        to_img = np.array([px, py], np.float32) / _DETECT_SIZE
        boxes = (boxes - np.tile(to_img, 2)) * (_DETECT_SIZE / scale)
        kps = (kps - to_img) * (_DETECT_SIZE / scale)
        return [self._face(*f) for f in _weighted_nms(boxes, kps, scores)]

    @staticmethod
    def _face(box: np.ndarray, kps: np.ndarray, score: float) -> Face:
        eyes = kps[1] - kps[0]
        axis = eyes / (np.linalg.norm(eyes) + 1e-6)
        # Where the nose sits between the ears, along the eye line: a cheap yaw.
        nose, r_ear, l_ear = (float(kps[i] @ axis) for i in (2, 4, 5))
        yaw = ((nose - r_ear) - (l_ear - nose)) / max(l_ear - r_ear, 1e-6)
        return Face(*(float(v) for v in box), score=score,
                    roll=float(np.arctan2(eyes[1], eyes[0])),
                    yaw=float(np.clip(yaw, -1.0, 1.0)), keypoints=kps)

    def landmarks(self, rgb: np.ndarray, face: Face) -> tuple[np.ndarray, float]:
        """The 468 mesh points (x, y, z) in image pixels (z in the same scale, smaller is nearer
        the camera), and the model's face-presence score 0..1: reject the points below ~0.5."""
        size = _ROI_SCALE * max(face.x1 - face.x0, face.y1 - face.y0)
        k = size / _MESH_SIZE
        c, s = np.cos(face.roll) * k, np.sin(face.roll) * k
        cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
        half = _MESH_SIZE / 2
        # Crop pixel -> image pixel: centre on the face, scale, turn by the roll.
        crop_to_img = np.array([[c, -s, cx - half * (c - s)],
                                [s, c, cy - half * (s + c)]], np.float32)
        crop = cv2.warpAffine(rgb, crop_to_img, (_MESH_SIZE, _MESH_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        # The mesh model takes [0, 1] (face_landmark_cpu.pbtxt: output_tensor_float_range).
        mesh, flag = self._run(self._mesh, crop.astype(np.float32) / 255.0)
        pts = mesh.reshape(468, 3).astype(np.float32)
        out = np.empty_like(pts)
        out[:, :2] = pts[:, :2] @ crop_to_img[:, :2].T + crop_to_img[:, 2]
        out[:, 2] = pts[:, 2] * k
        return out, float(1.0 / (1.0 + np.exp(-flag.item())))


def _weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray):
    """MediaPipe's WEIGHTED non-max suppression: each cluster of boxes overlapping the best
    remaining one (IoU > 0.3) is merged into their score-weighted mean, with the best score."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    left = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not left[i]:
            continue
        lo = np.maximum(boxes[i, :2], boxes[:, :2])
        hi = np.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        group = left & (inter / (area[i] + area - inter + 1e-9) > _NMS_IOU)
        wts = scores[group] / scores[group].sum()
        out.append((wts @ boxes[group], np.tensordot(wts, kps[group], axes=1), float(scores[i])))
        left &= ~group
    return out


def mouth_metrics(points: np.ndarray) -> tuple[float, float]:
    """(openness, width) of the mouth: the inner-lip gap 13-14 and the corner distance 61-291,
    both divided by the distance between the outer eye corners so they do not depend on the
    face's size in the image."""
    xy = points[:, :2]
    eyes = float(np.linalg.norm(xy[EYE_OUTER_CORNERS[1]] - xy[EYE_OUTER_CORNERS[0]])) or 1.0
    gap = float(np.linalg.norm(xy[INNER_LIP_BOTTOM] - xy[INNER_LIP_TOP]))
    width = float(np.linalg.norm(xy[MOUTH_CORNERS[1]] - xy[MOUTH_CORNERS[0]]))
    return gap / eyes, width / eyes
