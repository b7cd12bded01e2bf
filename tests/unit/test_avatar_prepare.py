"""Preparing photo and video avatars from real faces, and rendering them (no Ray).

The face is scikit-image's astronaut (public domain, NASA); the video is made from it.
In the 512x512 original the Haar face box is about x 177..272, y 66..161, lips near y 145.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from serve_app.avatars import AvatarCancelled, AvatarError, AvatarExists, prepare_avatar
from serve_app.avatars.store import AvatarStore
from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME, VISEMES, LipSyncChunk
from serve_app.engines.lipsync.face import FaceAvatar
from serve_app.engines.lipsync.viseme_engine import VisemeLipSyncEngine

REPO = Path(__file__).resolve().parents[2]
FACE = (177, 66, 272, 161)  # the astronaut's face in the original image
N_VIDEO = 50


def write_png(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("avatars")


@pytest.fixture(scope="module")
def photo(work) -> Path:
    return write_png(work / "astronaut.png", data.astronaut())


def write_video(path: Path, frames) -> Path:
    """25 fps H.264 in MP4, or VP8 in WebM, from RGB frames of one even size."""
    with av.open(str(path), "w") as c:
        s = None
        for rgb in frames:
            if s is None:
                s = c.add_stream("libvpx" if path.suffix == ".webm" else "libx264", rate=25)
                s.height, s.width = rgb.shape[:2]
                s.pix_fmt = "yuv420p"
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        c.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def video(work) -> Path:
    """2 s at 25 fps, 448x448: a window over the astronaut panning right 1 px a frame."""
    img = data.astronaut()
    return write_video(work / "astronaut.mp4", (img[20:468, i:i + 448] for i in range(N_VIDEO)))


@pytest.fixture(scope="module")
def photo_avatar(work, photo) -> Path:
    return prepare_avatar(photo, "astro", work / "avatars", name="Astronaut")


@pytest.fixture(scope="module")
def video_avatar(work, video) -> Path:
    return prepare_avatar(video, "astro-video", work / "avatars")


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def assert_only_mouth_changes(avatar: FaceAvatar, index: int, viseme: str) -> None:
    idle, talk = avatar.idle_frame(index), avatar.frame(index, viseme)
    diff = changed(idle, talk)
    x0, y0, x1, y1 = avatar.mouth_box(index)
    inside = diff[y0:y1, x0:x1].sum()
    diff[y0:y1, x0:x1] = False
    assert diff.sum() == 0, f"{viseme}: pixels changed outside the mouth box"
    assert inside > 0.1 * (x1 - x0) * (y1 - y0), f"{viseme}: the mouth barely moves ({inside})"


# ---- a photo ----

def test_photo_avatar_files_and_face_box(photo_avatar):
    m = manifest(photo_avatar)
    assert (m["format"], m["kind"], m["id"], m["name"]) == (1, "photo", "astro", "Astronaut")
    assert m["size"] == [512, 512] and m["fps"] == 25 and m["n_frames"] == 1
    assert sorted(p.name for p in photo_avatar.iterdir()) == [
        "frames", "landmarks.npy", "manifest.json", "mask.png", "neural", "thumbnail.png"]
    assert [p.name for p in (photo_avatar / "frames").iterdir()] == ["00000.jpg"]
    assert [p.name for p in (photo_avatar / "neural" / "crops").iterdir()] == ["00000.jpg"]
    neural_mask = cv2.imread(str(photo_avatar / "neural" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    assert neural_mask.shape == (256, 256) and neural_mask[:120].max() == 0 and neural_mask[200, 128] == 255
    assert cv2.imread(str(photo_avatar / "thumbnail.png")).shape == (128, 128, 3)

    # The face box, mapped back through the crop, is the astronaut's face.
    cx, cy, side = m["crop"]
    k = side / 512
    x0, y0, x1, y1 = (np.array(m["face_boxes"][0]) * k + [cx, cy, cx, cy])
    assert abs(x0 - FACE[0]) < 12 and abs(x1 - FACE[2]) < 12
    assert abs(y0 - FACE[1]) < 12 and abs(y1 - FACE[3]) < 12
    # The crop keeps head and shoulders: several face widths, not just the face.
    assert side >= 3 * (FACE[2] - FACE[0])
    # The mouth box holds the lips (original y ~145, x ~222) and lies inside the face's width.
    mx0, my0, mx1, my1 = np.array(m["mouth_boxes"][0]) * k + [cx, cy, cx, cy]
    assert mx0 < 205 and mx1 > 240 and my0 < 140 and my1 > 152
    assert mx0 >= FACE[0] - 5 and mx1 <= FACE[2] + 5 and my0 > FACE[1] + 40

    # The neural engines' crop: the face box reaching below the chin, stored at 256x256.
    nx0, ny0, nx1, ny1 = m["neural"]["boxes"][0]
    fx0, fy0, fx1, fy1 = m["face_boxes"][0]
    assert (nx0, ny0, nx1) == (fx0, fy0, fx1) and ny1 > fy1
    assert m["neural"]["crop_size"] == 256 and "musetalk_latents" not in m["neural"]
    crop = cv2.imread(str(photo_avatar / "neural" / "crops" / "00000.jpg"))
    frame = cv2.imread(str(photo_avatar / "frames" / "00000.jpg"))
    expect = cv2.resize(frame[ny0:ny1, nx0:nx1], (256, 256), interpolation=cv2.INTER_CUBIC)
    assert crop.shape == (256, 256, 3) and np.abs(crop.astype(int) - expect).mean() < 4

    # The eyes, for blinks: one in each half of the face's upper part, above the mouth box.
    (lx0, ly0, lx1, ly1), (rx0, ry0, rx1, ry1) = m["eye_boxes"]
    centre = (fx0 + fx1) / 2
    assert fx0 <= lx0 < lx1 <= centre + 5 and centre - 5 <= rx0 < rx1 <= fx1
    assert fy0 < min(ly0, ry0) and max(ly1, ry1) < m["mouth_boxes"][0][1]

    mask = cv2.imread(str(photo_avatar / "mask.png"), cv2.IMREAD_GRAYSCALE)
    bx0, by0, bx1, by1 = m["mouth_boxes"][0]
    assert mask.shape == (by1 - by0, bx1 - bx0) and mask.max() == 255
    # Feathered: zero along the whole border, so the blend has no visible edge.
    assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0


def test_photo_talking_frames_differ_only_inside_the_mouth(photo_avatar):
    avatar = FaceAvatar(photo_avatar)
    assert avatar.kind == "photo" and avatar.size == (512, 512)
    for v in ("D", "C", "B", "F"):
        assert_only_mouth_changes(avatar, 7, v)
    # The astronaut smiles with her lips apart: the closed shape (P B M) changes her mouth too,
    # inside the box. A photo's idle frame is the same at every index where it does not blink.
    assert_only_mouth_changes(avatar, 3, "A")
    open_eyes = [i for i in range(1200, 1300) if avatar._blinker.closedness(i) == 0]
    assert np.array_equal(avatar.idle_frame(0), avatar.idle_frame(open_eyes[-1]))
    # Wider visemes open wider: count the dark pixels of the inner mouth.
    x0, y0, x1, y1 = avatar.mouth_box(0)
    dark = {v: int((avatar.frame(0, v)[y0:y1, x0:x1].max(axis=2) < 70).sum()) for v in "XBCD"}
    assert dark["X"] < dark["B"] < dark["C"] < dark["D"], dark
    # The frame is a new array each time, or fills ``out``.
    out = np.zeros((512, 512, 3), np.uint8)
    assert avatar.frame(0, "D", out=out) is out and np.array_equal(out, avatar.frame(0, "D"))
    with pytest.raises(ValueError, match="unknown viseme 'Q'"):
        avatar.frame(0, "Q")


def test_photo_blinks_every_few_seconds_only_inside_the_eyes(photo_avatar):
    avatar = FaceAvatar(photo_avatar)
    closed = [avatar._blinker.closedness(i) for i in range(250)]  # 10 s
    starts = [i for i in range(250) if closed[i] > 0 and (i == 0 or closed[i - 1] == 0)]
    assert 1 <= len(starts) <= 5, starts
    shut = next(i for i in range(250) if closed[i] == 1.0)
    still = next(i for i in range(250) if closed[i] == 0)
    diff = changed(avatar.idle_frame(shut), avatar.idle_frame(still))
    for x0, y0, x1, y1 in avatar._blinker.boxes:
        # The lid covers the eye: many pixels of each eye box change...
        assert diff[y0:y1, x0:x1].sum() > 0.2 * (x1 - x0) * (y1 - y0)
        diff[y0:y1, x0:x1] = False
    assert diff.sum() == 0  # ... and nothing outside them
    assert_only_mouth_changes(avatar, shut, "D")  # talking frames blink too


def test_eye_boxes_are_checked(tmp_path, photo_avatar, video_avatar):
    for n, (folder, eyes, problem) in enumerate((
        (video_avatar, [[1, 1, 9, 9], [20, 1, 29, 9]], "for photo avatars"),
        (photo_avatar, [[1, 1, 9, 9]], "two boxes"),
        (photo_avatar, [[1, 1, 9, 9], [500, 1, 530, 9]], "inside the 512x512 frame"),
    )):
        copy = tmp_path / str(n) / folder.name  # the folder's name is the avatar's id
        shutil.copytree(folder, copy)
        m = manifest(copy)
        m["eye_boxes"] = eyes
        (copy / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(ValueError, match=problem):
            FaceAvatar(copy)


def test_engine_renders_and_lists_face_avatars(work, photo_avatar):
    engine = VisemeLipSyncEngine(work / "avatars")
    visemes = ["X", "C", "D", "D", "X"]
    frames = engine.render(LipSyncChunk("astro", 10, np.zeros(5 * SAMPLES_PER_FRAME,
                                                              np.float32), visemes))
    avatar = engine.avatar("astro")
    assert isinstance(avatar, FaceAvatar) and frames.shape == (5, 512, 512, 3)
    for k, v in enumerate(visemes):
        assert np.array_equal(frames[k], avatar.frame(10 + k, v))
    listed = AvatarStore(work / "avatars").get("astro")
    assert {k: listed[k] for k in ("id", "name", "kind", "size", "has_thumbnail")} == {
        "id": "astro", "name": "Astronaut", "kind": "photo", "size": [512, 512], "has_thumbnail": True}


def test_engine_rejects_an_unknown_kind(tmp_path, photo_avatar):
    folder = tmp_path / "odd"
    folder.mkdir()
    odd = {**manifest(photo_avatar), "kind": "hologram"}
    (folder / "manifest.json").write_text(json.dumps(odd))
    with pytest.raises(ValueError, match="unknown 'kind' 'hologram'"):
        VisemeLipSyncEngine(tmp_path).avatar("odd")


# ---- a video ----

def test_video_avatar(video_avatar):
    m = manifest(video_avatar)
    assert m["kind"] == "video" and abs(m["n_frames"] - N_VIDEO) <= 1
    n = m["n_frames"]
    assert len(list((video_avatar / "frames").glob("*.jpg"))) == n
    assert len(m["face_boxes"]) == len(m["mouth_boxes"]) == n
    faces = np.array(m["face_boxes"], dtype=float)
    # Smoothed: the window pans 1 source px a frame, so boxes move steadily, without jumps.
    assert np.abs(np.diff(faces, axis=0)).max() <= 3
    # The face moves left in the window as it pans right: ~49 source px over the clip.
    k = 512 / m["crop"][2]
    assert 35 * k < faces[0, 0] - faces[-1, 0] < 60 * k
    # All mouth boxes share one size (one mask serves them all).
    boxes = np.array(m["mouth_boxes"])
    assert len({(b[2] - b[0], b[3] - b[1]) for b in boxes}) == 1


def test_face_tracker_searches_near_the_last_face_then_everywhere():
    from serve_app.avatars.prepare import _FaceTracker

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    tracker = _FaceTracker(min_face=40)
    first = tracker.find(gray)
    assert np.allclose(first, FACE, atol=12) and tracker.full_searches == 1
    moved = tracker.find(np.roll(gray, (10, 15), axis=(0, 1)))  # a small move: found nearby
    assert np.allclose(moved, first + [15, 10, 15, 10], atol=6) and tracker.full_searches == 1
    canvas = np.full((1024, 1024), 128, np.uint8)
    canvas[500:1012, 480:992] = gray  # the face jumped 480 px: lost nearby, found by a full search
    jumped = tracker.find(canvas)
    assert np.allclose(jumped, first + [480, 500, 480, 500], atol=12) and tracker.full_searches == 2


def test_video_idle_ping_pongs_and_talks_only_inside_the_mouth(video_avatar):
    avatar = FaceAvatar(video_avatar)
    n = avatar.n_frames
    order = [avatar.source_index(i) for i in range(3 * n)]
    assert order[:n] == list(range(n))
    assert order[n:2 * n - 2] == list(range(n - 2, 0, -1))  # back, without repeating the ends
    assert order[2 * n - 2] == 0 and order[2 * n - 1] == 1
    assert np.array_equal(avatar.idle_frame(n), avatar.idle_frame(n - 2))
    assert np.array_equal(avatar.idle_frame(2 * n - 2), avatar.idle_frame(0))
    assert not np.array_equal(avatar.idle_frame(0), avatar.idle_frame(n - 1))
    for index in (0, n // 2, n + 5):
        for v in ("D", "C"):
            assert_only_mouth_changes(avatar, index, v)
    assert avatar.mouth_box(n) == avatar.mouth_box(n - 2)
    for v in VISEMES:
        assert avatar.frame(n + 3, v).shape == (512, 512, 3)


# ---- bad input: an error naming the problem, and nothing left on disk ----

def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a picture\n")
    with pytest.raises(AvatarError, match="notes.png is not an image or video"):
        prepare_avatar(bad, "notes", tmp_path / "avatars")
    assert list((tmp_path / "avatars").iterdir()) == []


@pytest.mark.parametrize("image", ["coffee", "gradient"])
def test_no_face_leaves_nothing_behind(tmp_path, image):
    if image == "coffee":
        rgb = data.coffee()
    else:
        rgb = np.repeat(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], 300, 0)
        rgb = np.repeat(rgb, 3, 2)
    src = write_png(tmp_path / f"{image}.png", rgb)
    with pytest.raises(AvatarError, match=f"no face found in {image}.png"):
        prepare_avatar(src, "nobody", tmp_path / "avatars")
    assert list((tmp_path / "avatars").iterdir()) == []


def test_video_without_a_face(tmp_path):
    coffee = data.coffee()[:400, :592]
    src = write_video(tmp_path / "coffee.webm", (np.roll(coffee, 4 * i, 1) for i in range(12)))
    with pytest.raises(AvatarError, match=r"no face found in coffee.webm: a face was detected "
                                          r"in only 0 of 12 frames"):
        prepare_avatar(src, "nobody", tmp_path / "avatars")
    assert list((tmp_path / "avatars").iterdir()) == []


@pytest.mark.parametrize("bad_id", ["../x", "a.b", "a/b", "", ".hidden", "x" * 65, "é"])
def test_bad_ids_are_refused(tmp_path, photo, bad_id):
    with pytest.raises(AvatarError, match="invalid avatar id"):
        prepare_avatar(photo, bad_id, tmp_path / "avatars")
    assert not (tmp_path / "x").exists() and not (tmp_path / "avatars").exists()


def test_duplicate_id(work, photo, photo_avatar):
    before = sorted(p.name for p in photo_avatar.parent.iterdir())
    with pytest.raises(AvatarExists, match="'astro' already exists"):
        prepare_avatar(photo, "astro", photo_avatar.parent)
    assert sorted(p.name for p in photo_avatar.parent.iterdir()) == before


@pytest.mark.parametrize("stage", ["reading", "detecting", "writing"])
def test_cancel_midway_leaves_nothing(tmp_path, video, stage):
    seen: list[tuple[str, float]] = []
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return bool(seen) and seen[-1][0] == stage and seen[-1][1] > 0.1

    with pytest.raises(AvatarCancelled):
        prepare_avatar(video, "stopped", tmp_path / "avatars",
                       progress=lambda s, f: seen.append((s, f)), cancelled=cancelled)
    assert list((tmp_path / "avatars").iterdir()) == []
    assert seen[-1][0] == stage and seen[-1][1] < 0.5 and calls > 5


def test_progress_stages_in_order(tmp_path, video):
    seen: list[tuple[str, float]] = []
    prepare_avatar(video, "v", tmp_path, progress=lambda s, f: seen.append((s, f)))
    stages = [s for s, _ in seen]
    assert sorted(set(stages), key=stages.index) == ["reading", "detecting", "writing"]
    for stage in ("reading", "detecting", "writing"):
        fractions = [f for s, f in seen if s == stage]
        assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


# ---- the command line ----

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serve_app.avatars", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_prepare_and_list(tmp_path, photo):
    r = run_cli("prepare", str(photo), "--id", "cli-astro", "--name", "Eileen",
                "--avatars-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cli-astro" / "manifest.json").is_file()
    assert "writing" in r.stderr and "100%" in r.stderr
    r = run_cli("list", "--avatars-dir", str(tmp_path))
    assert r.returncode == 0 and "cli-astro" in r.stdout and "photo" in r.stdout
    assert "Eileen" in r.stdout


def test_cli_missing_musetalk_models_fail_before_any_work(tmp_path, photo):
    result = run_cli("prepare", str(photo), "--id", "astro", "--avatars-dir", str(tmp_path / "av"),
                     "--musetalk-models", str(tmp_path / "models"))
    assert result.returncode == 2
    assert "musetalk.json" in result.stderr and "TMElyralab/MuseTalk" in result.stderr
    assert not (tmp_path / "av").exists() or list((tmp_path / "av").iterdir()) == []


def test_cli_bad_file(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 1000)
    r = run_cli("prepare", str(bad), "--id", "bad", "--avatars-dir", str(tmp_path / "avatars"))
    assert r.returncode == 2
    assert "clip.mp4 is not an image or video PyAV/OpenCV can read" in r.stderr
    assert list((tmp_path / "avatars").iterdir()) == []


# ---- decoding bounds: decided from the file's headers and content, before decoding ----

@pytest.mark.parametrize("size", [(100, 5000), (4000, 4000)])  # too long a side; too many pixels
def test_oversized_sources_are_refused_before_decoding(tmp_path, size):
    src = write_png(tmp_path / "huge.png", np.zeros((*size, 3), np.uint8))
    with pytest.raises(AvatarError, match=rf"huge.png is {size[1]}x{size[0]}; the limit is 4096"):
        prepare_avatar(src, "huge", tmp_path / "avatars")
    assert list((tmp_path / "avatars").iterdir()) == []


def test_the_container_is_told_by_content_not_by_name(tmp_path, photo):
    disguised = tmp_path / "clip.mp4"  # a PNG under a video's name is prepared as the photo it is
    disguised.write_bytes(photo.read_bytes())
    assert json.loads((prepare_avatar(disguised, "disguised", tmp_path / "avatars") / "manifest.json").read_text())["kind"] == "photo"
    tiff = tmp_path / "scan.png"  # a TIFF is not on the list, whatever its name
    ok, encoded = cv2.imencode(".tiff", np.zeros((64, 64, 3), np.uint8))
    tiff.write_bytes(encoded.tobytes())
    with pytest.raises(AvatarError, match="scan.png is piped tiff sequence; use a PNG, JPEG"):
        prepare_avatar(tiff, "scan", tmp_path / "avatars")


def test_a_preparation_past_its_time_limit_fails_and_leaves_nothing(tmp_path, video):
    with pytest.raises(AvatarError, match="took longer than 1e-09 s"):
        prepare_avatar(video, "slow", tmp_path / "avatars", time_limit_s=1e-9)
    assert list((tmp_path / "avatars").iterdir()) == []
