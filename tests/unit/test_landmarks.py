"""The face mesh on a real photo (scikit-image's astronaut, 512x512 RGB), with the models from
the mediapipe wheel run by ai-edge-litert. Skipped where either is not installed."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from serve_app.engines.lipsync import landmarks as lm

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def mesh() -> lm.FaceMesh:
    try:
        return lm.FaceMesh()
    except lm.LandmarkModelMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


def _low_res_gray(rgb: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (128, 128), interpolation=cv2.INTER_AREA)
    return np.dstack([cv2.resize(small, (256, 256), interpolation=cv2.INTER_LINEAR)] * 3)


def _check_face(mesh: lm.FaceMesh, rgb: np.ndarray) -> tuple[lm.Face, np.ndarray]:
    """One face; its lips where lips belong. Returns the face and its points."""
    faces = mesh.detect(rgb)
    assert len(faces) == 1, faces
    face = faces[0]
    assert face.score > 0.5 and face.x1 > face.x0 and face.y1 > face.y0
    assert abs(face.yaw) < 0.3  # she faces the camera
    pts, presence = mesh.landmarks(rgb, face)
    assert pts.shape == (468, 3) and pts.dtype == np.float32
    assert presence > 0.9

    mouth = pts[list(set(lm.LIPS_OUTER_UPPER + lm.LIPS_OUTER_LOWER)), :2]
    mid_y = (face.y0 + face.y1) / 2
    assert np.all(mouth[:, 0] > face.x0) and np.all(mouth[:, 0] < face.x1)
    assert np.all(mouth[:, 1] > mid_y) and np.all(mouth[:, 1] < face.y1)

    top, bottom = pts[lm.INNER_LIP_TOP], pts[lm.INNER_LIP_BOTTOM]
    right, left = pts[lm.MOUTH_CORNERS[0]], pts[lm.MOUTH_CORNERS[1]]
    eyes_y = max(pts[list(lm.RIGHT_EYE + lm.LEFT_EYE), 1])
    assert top[1] > eyes_y and bottom[1] > eyes_y
    assert right[0] < top[0] < left[0] and right[0] < bottom[0] < left[0]
    assert bottom[1] >= top[1]  # the inner lower lip is not above the upper one
    assert pts[lm.CHIN, 1] > bottom[1]  # the chin is below the mouth

    openness, width = lm.mouth_metrics(pts)
    assert 0 <= openness < 0.5  # her smile is slightly open
    assert 0.5 < width < 1.1  # a mouth is roughly as wide as the eyes are apart
    return face, pts


def test_astronaut_has_one_face_with_lips_in_place(mesh, astronaut):
    face, _ = _check_face(mesh, astronaut)
    n = 50
    start = time.perf_counter()
    for _ in range(n):
        mesh.landmarks(astronaut, face)
    mesh_ms = (time.perf_counter() - start) / n * 1e3
    start = time.perf_counter()
    for _ in range(n):
        mesh.detect(astronaut)
    detect_ms = (time.perf_counter() - start) / n * 1e3
    print(f"\n512x512: landmarks {mesh_ms:.2f} ms per face, detect {detect_ms:.2f} ms per image")


def test_low_resolution_grayscale_still_finds_the_lips(mesh, astronaut):
    _check_face(mesh, _low_res_gray(astronaut))


def test_mouth_metrics_do_not_depend_on_image_size(mesh, astronaut):
    _, pts = _check_face(mesh, astronaut)
    scaled = pts * 3 + np.array([40, -7, 0], np.float32)
    assert np.allclose(lm.mouth_metrics(scaled), lm.mouth_metrics(pts), rtol=1e-5)


def test_flat_gray_image_has_no_face(mesh, astronaut):
    gray = np.full((360, 640, 3), 128, np.uint8)
    assert mesh.detect(gray) == []
    # Given a box anyway, the mesh model itself says nothing is there.
    face = mesh.detect(astronaut)[0]
    _, presence = mesh.landmarks(np.full_like(astronaut, 128), face)
    assert presence < 0.1


def test_missing_model_names_the_package(tmp_path):
    with pytest.raises(lm.LandmarkModelMissing, match=r"mediapipe==0\.10\.21") as err:
        lm.FaceMesh(detector_model=tmp_path / "nope.tflite")
    assert "ai-edge-litert" in str(err.value)


def test_corrupt_model_file_is_reported(tmp_path, mesh):  # `mesh`: skip without the runtime
    bad = tmp_path / "face_landmark.tflite"
    bad.write_bytes(np.random.default_rng(1).bytes(50_000))
    with pytest.raises(lm.LandmarkModelMissing, match=r"unreadable.*mediapipe==0\.10\.21"):
        lm.FaceMesh(mesh_model=bad)


def test_swapped_models_are_reported(mesh):
    detector = lm._wheel_model(lm.DETECTOR_FILE)
    with pytest.raises(lm.LandmarkModelMissing, match=r"takes \(1, 128, 128, 3\)"):
        lm.FaceMesh(mesh_model=detector)
