"""An independent judge of mouths on rendered frames: dlib's 68-point shape predictor, a
landmark model other than the face mesh that places them (tests and benchmarks only: its
iBUG 300-W training data is not for commercial use). Needs `pip install dlib-bin` and the
Debian package libdlib-data (scripts/test.sh installs both)."""
from __future__ import annotations

from functools import cache

import numpy as np

PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"


@cache
def _models():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(PREDICTOR)


def mouth_opening(rgb: np.ndarray) -> float | None:
    """The inner lips' opening (mean of the three inner-lip pairs), in mouth widths; None when
    dlib finds no face."""
    detector, predictor = _models()
    faces = detector(np.ascontiguousarray(rgb), 1)
    if not faces:
        return None
    shape = predictor(rgb, faces[0])
    p = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], float)
    inner = np.mean([np.linalg.norm(p[67 - k] - p[61 + k]) for k in range(3)])  # 61-67, 62-66, 63-65
    return float(inner / np.linalg.norm(p[54] - p[48]))
