"""A real person's mouth moved from face-mesh landmarks (issue 23, parts 1 and 2), no Ray.

The faces: scikit-image's astronaut (she smiles with her teeth showing at rest) and a
low-resolution grayscale copy of her. The lips are read back from the rendered frames by an
independent judge, dlib's 68-point model (tests/face_judge.py), not the face mesh that
placed them.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from serve_app.avatars import AvatarError, prepare_avatar
from serve_app.avatars.face_points import nose_position, shared_mesh
from serve_app.engines.lipsync.face import FaceAvatar
from serve_app.engines.lipsync.landmarks import INNER_LIP_BOTTOM, INNER_LIP_TOP, MOUTH_CORNERS
from tests.face_judge import mouth_opening

OPEN, CLOSED = "D", "A"


def write_png(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def low_res_gray() -> np.ndarray:
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (160, 160), interpolation=cv2.INTER_AREA)
    return np.repeat(cv2.resize(small, (320, 320), interpolation=cv2.INTER_LINEAR)[..., None], 3, axis=2)


@pytest.fixture(scope="module", params=["astronaut", "low-res-gray"])
def avatar(request, tmp_path_factory) -> FaceAvatar:
    work = tmp_path_factory.mktemp("faces")
    image = data.astronaut() if request.param == "astronaut" else low_res_gray()
    return FaceAvatar(prepare_avatar(write_png(work / "face.png", image), request.param, work / "avatars"))


def inner_gap(rgb: np.ndarray) -> float:
    gap = mouth_opening(rgb)
    assert gap is not None, "the judge found no face"
    return gap


def test_preparation_stores_each_frames_landmarks_on_the_lips(avatar):
    manifest = json.loads((avatar.folder / "manifest.json").read_text())
    points = np.load(avatar.folder / manifest["landmarks"])
    assert points.shape == (1, 468, 2) and points.dtype == np.float32 and manifest["landmarks_hidden"] == []
    x0, y0, x1, y1 = avatar.mouth_box(0)
    lips = points[0, [*MOUTH_CORNERS, INNER_LIP_TOP, INNER_LIP_BOTTOM]]
    assert np.all((lips >= (x0, y0)) & (lips < (x1, y1)))  # the box is on the lips


def test_open_shapes_part_the_lips_and_bilabials_close_a_smile(avatar):
    rest = inner_gap(avatar.idle_frame(0))
    wide = inner_gap(avatar.frame(0, OPEN))
    closed = inner_gap(avatar.frame(0, CLOSED))
    silent = inner_gap(avatar.frame(0, "X"))  # between words while talking
    assert wide >= 2 * max(rest, 0.05), (rest, wide)
    assert closed <= 0.6 * max(rest, 0.05), (rest, closed)  # the smile's teeth are covered
    assert silent <= 0.6 * max(rest, 0.05), (rest, silent)
    gaps = [inner_gap(avatar.frame(0, v)) for v in "BCD"]
    assert gaps == sorted(gaps), gaps  # slightly open < open < wide open


def test_the_mouth_changes_only_inside_its_box_without_a_seam(avatar):
    idle = avatar.idle_frame(0).astype(np.int16)
    x0, y0, x1, y1 = avatar.mouth_box(0)
    for viseme in "XABCDEFGH":
        talk = avatar.frame(0, viseme).astype(np.int16)
        changed = np.argwhere(np.abs(talk - idle).max(axis=2) > 0)
        assert len(changed), viseme
        assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1, viseme
        assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1, viseme
        # No seam: across the box's edge ring, the talking frame's gradient is the idle one's.
        ring = np.zeros(idle.shape[:2], bool)
        ring[y0:y1, x0:x1] = True
        ring[y0 + 3:y1 - 3, x0 + 3:x1 - 3] = False
        grad = [np.abs(np.diff(f.mean(axis=2), axis=0))[ring[1:]].mean() for f in (talk, idle)]
        assert grad[0] <= 1.05 * grad[1] + 0.5, (viseme, grad)


def test_a_photo_with_two_faces_is_refused(tmp_path):
    face = data.astronaut()[40:300, 120:330]
    two = np.hstack([face, face])
    with pytest.raises(AvatarError, match="2 faces found; crop the picture"):
        prepare_avatar(write_png(tmp_path / "two.png", two), "two", tmp_path / "avatars")
    assert not (tmp_path / "avatars" / "two").exists()


def test_a_face_too_small_is_refused(tmp_path):
    tiny = cv2.resize(data.astronaut(), (150, 150), interpolation=cv2.INTER_AREA)
    canvas = np.full((320, 320, 3), 200, np.uint8)
    canvas[85:235, 85:235] = tiny
    with pytest.raises(AvatarError, match="px wide; use a picture where it is at least"):
        prepare_avatar(write_png(tmp_path / "tiny.png", canvas), "tiny", tmp_path / "avatars")


def test_a_face_turned_aside_is_measured_as_such():
    """The profile rule's measure: where the nose sits between the eyes' outer corners."""
    mesh = shared_mesh()
    image = data.astronaut()
    [face, *_] = mesh.detect(image)
    points, _ = mesh.landmarks(image, face)
    assert 0.4 < nose_position(points) < 0.6
    turned = points.copy()
    turned[:, 0] = np.where(turned[:, 0] > points[1, 0], points[1, 0] + 0.3 * (turned[:, 0] - points[1, 0]),
                            turned[:, 0])  # the far half of the face foreshortened, as in a turn
    assert nose_position(turned) > 0.7


def test_a_hidden_frame_keeps_its_mouth_and_bad_landmarks_are_named(avatar, tmp_path):
    import shutil

    copy = tmp_path / avatar.id
    shutil.copytree(avatar.folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "landmarks_hidden": [0]}))
    hidden = FaceAvatar(copy)
    assert np.array_equal(hidden.frame(0, OPEN), hidden.idle_frame(0))
    np.save(copy / "landmarks.npy", np.zeros((2, 468, 2), np.float32))  # the wrong frame count
    with pytest.raises(ValueError, match=r"'landmarks' must hold \(1, 468, 2\)"):
        FaceAvatar(copy)
