"""Face-mesh points for every stored frame of an avatar being prepared (serve_app/avatars/prepare.py).

The source is checked first (one face, big enough, looking at the camera), then each stored
frame gets its 468 points (serve_app/engines/lipsync/landmarks.py). A frame where the mesh
model does not see a face (a hand or a microphone over it) is marked hidden: its mouth is
never redrawn, and the job's result says how many there were. A clip's points are smoothed
over time, which takes out the model's frame-to-frame jitter (about a pixel) but not speech.
"""
from __future__ import annotations

import numpy as np

from serve_app.engines.lipsync.landmarks import EYE_OUTER_CORNERS, Face, FaceMesh

MIN_FACE_PX = 40  # narrower faces (in the source) have too few pixels for a mouth to move
MIN_PRESENCE = 0.5  # the mesh model's face score below which a frame's points are not trusted
SECOND_FACE = 0.5  # another face at least this fraction of the main one's width: ambiguous
FRONTAL = (0.3, 0.7)  # where the nose tip may sit between the outer eye corners (0.5: frontal)
NOSE_TIP = 1
SMOOTH = np.array([0.25, 0.5, 0.25], np.float32)  # over neighbouring frames


class FaceProblem(ValueError):
    """The source's face cannot be animated; the message says what to change."""


_mesh: FaceMesh | None = None


def shared_mesh() -> FaceMesh:
    """One FaceMesh per process (the models load in ~0.1 s; it serialises its own calls)."""
    global _mesh
    if _mesh is None:
        _mesh = FaceMesh()
    return _mesh


def check_source(mesh: FaceMesh, rgb: np.ndarray) -> None:
    """Refuse a source with two faces, a face too small, or a face in profile."""
    faces = mesh.detect(rgb)
    if not faces:
        return  # the Haar pass decides "no face" with its own message
    main = faces[0]
    width = main.x1 - main.x0
    others = [f for f in faces[1:] if f.x1 - f.x0 >= SECOND_FACE * width]
    if others:
        raise FaceProblem(f"{len(others) + 1} faces found; crop the picture to the one face that should talk")
    too_small(width)
    points, presence = mesh.landmarks(rgb, main)
    if presence < MIN_PRESENCE:
        return
    if not FRONTAL[0] <= nose_position(points) <= FRONTAL[1]:
        raise FaceProblem("the face is turned to the side; use a picture of the face looking at the camera")


def too_small(width: float) -> None:
    """`width`: the face's, in source pixels."""
    if width < MIN_FACE_PX:
        raise FaceProblem(f"the face is only {width:.0f} px wide; use a picture where it is at least "
                          f"{MIN_FACE_PX} px wide")


def nose_position(points: np.ndarray) -> float:
    """Where the nose tip lies between the outer eye corners, along the eye line: 0.5 when the
    face looks at the camera, towards 0 or 1 as it turns away."""
    a, b = points[EYE_OUTER_CORNERS[0], :2], points[EYE_OUTER_CORNERS[1], :2]
    axis = b - a
    return float((points[NOSE_TIP, :2] - a) @ axis / max(float(axis @ axis), 1e-6))


class FramePoints:
    """Collects each stored frame's points; `finish` smooths them and fills hidden frames."""

    def __init__(self, mesh: FaceMesh) -> None:
        self._mesh = mesh
        self._points: list[np.ndarray | None] = []

    def add(self, rgb: np.ndarray, face_box: np.ndarray) -> None:
        """`face_box`: (x0, y0, x1, y1) of the tracked face in this frame, where the mesh
        detector finds none of its own."""
        found = self._mesh.detect(rgb)
        cx, cy = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
        near = [f for f in found if f.x0 <= cx <= f.x1 and f.y0 <= cy <= f.y1]
        face = near[0] if near else Face(*(float(v) for v in face_box))
        points, presence = self._mesh.landmarks(rgb, face)
        self._points.append(points[:, :2] if presence >= MIN_PRESENCE else None)

    def finish(self) -> tuple[np.ndarray, list[int]]:
        """(points (n, 468, 2) float32, indices of the hidden frames). Raises FaceProblem when
        no frame has a face the mesh model can read."""
        hidden = [i for i, p in enumerate(self._points) if p is None]
        seen = [i for i, p in enumerate(self._points) if p is not None]
        if not seen:
            raise FaceProblem("the face's features could not be found; use a sharp, well-lit picture of "
                              "a face looking at the camera, not covered")
        points = np.stack([self._points[i] if self._points[i] is not None else self._points[_nearest(seen, i)]
                           for i in range(len(self._points))]).astype(np.float32)
        if len(points) >= 3:  # a clip: a [1 2 1] filter over time, the ends kept
            points[1:-1] = np.tensordot(SMOOTH, np.stack([points[:-2], points[1:-1], points[2:]]), axes=1)
        return points, hidden


def _nearest(indices: list[int], i: int) -> int:
    return min(indices, key=lambda j: abs(j - i))
