"""Turn a photo or a short video of a face into a photo/video avatar folder.

Steps: read the source (sampled at 25 fps), check it shows one face that can be animated
(face_points.check_source), find the face in every frame with OpenCV's Haar cascade (tracked
near the last face, see _FaceTracker), smooth the boxes over time, pick one square crop around
head and shoulders for the whole clip (a moving crop would make the background swim), and
store the cropped frames, their face-mesh points (face_points.FramePoints), the face and mouth
boxes and a feathered blend mask for the mouth. The format is documented in
avatars/README.md; serve_app.engines.lipsync.face renders it. For the neural engines it also
stores a model-input crop per frame (neural/crops, with their boxes in the manifest) and, when
given an encoder (MuseTalk's VAE), each crop's reference latents.

The folder is written under a hidden temporary name and renamed into place at the end, so a
reader never sees half an avatar, and a failed or cancelled preparation leaves nothing behind.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from serve_app.avatars.face_points import FaceProblem, FramePoints, check_source, shared_mesh, too_small
from serve_app.engines.lipsync.base import FPS
from serve_app.engines.lipsync.landmarks import INNER_LIP_BOTTOM, INNER_LIP_TOP, MOUTH_CORNERS, FaceMesh
from serve_app.engines.lipsync.blink import find_eyes
from serve_app.engines.lipsync.neural.crops import CROP_SIZE, LATENTS_FILE, crop_boxes, cut_crop, lower_face_mask

FORMAT = 1
AVATAR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DETECT_SIDE = 480  # frames are searched for faces at most this size (short side): fast enough
CROP_FACES = 4.0  # the square crop is this many face widths: head, shoulders and some room
FACE_AT = 0.42  # where the face centre sits in the crop, as a fraction of the height
TRACK_MARGIN = 0.5  # the next frame's face is sought this many face widths around the last one
TRACK_SIZES = (0.7, 1.4)  # ... at these sizes relative to it
SMOOTH_FRAMES = 9  # moving-average window for the face boxes (0.36 s): removes Haar jitter
JPEG_QUALITY = 92
LANDMARKS_FILE = "landmarks.npy"
# The mouth box, in face widths around the lips' centre (from the face-mesh points).
MOUTH_HALF_WIDTH = 0.22
BOX_HALF_WIDTH = 0.36
BOX_ABOVE, BOX_BELOW = 0.20, 0.36

Progress = Callable[[str, float], None]
# Neural reference latents for a batch of crops: (n, 256, 256, 3) uint8 BGR -> (n, ...) array.
Encoder = Callable[[np.ndarray], np.ndarray]


class AvatarError(Exception):
    """The source cannot become an avatar; the message says why."""


class AvatarExists(AvatarError):
    """An avatar with this id already exists."""


class AvatarCancelled(AvatarError):
    """Preparation was cancelled; nothing was written."""


def validate_id(avatar_id: object) -> str:
    if not isinstance(avatar_id, str) or not AVATAR_ID.fullmatch(avatar_id):
        raise AvatarError(f"invalid avatar id {avatar_id!r}: use 1 to 64 letters, digits, "
                          "'_' and '-'")
    return avatar_id


def prepare_avatar(source: Path, avatar_id: str, avatars_dir: Path, *, name: str | None = None,
                   max_seconds: float = 20.0, size: int = 512, progress: Progress | None = None,
                   cancelled: Callable[[], bool] | None = None, encoder: Encoder | None = None,
                   time_limit_s: float | None = None, mesh: FaceMesh | None = None) -> Path:
    """Prepare ``source`` (an image or a video) as avatar ``avatar_id``; returns its folder.

    ``progress(stage, fraction)`` is called for the stages "reading", "detecting", "writing"
    and, with an ``encoder``, "encoding"; ``cancelled()`` is polled between frames and raises
    AvatarCancelled when it returns True; past ``time_limit_s`` the preparation fails.
    ``mesh``: the face-mesh models (default: this process's, loaded on first use).
    """
    source, avatars_dir = Path(source), Path(avatars_dir)
    validate_id(avatar_id)
    final = avatars_dir / avatar_id
    if final.exists():
        raise AvatarExists(f"an avatar with id {avatar_id!r} already exists")
    if not source.is_file():
        raise AvatarError(f"{source.name}: file not found")
    report = progress or (lambda stage, fraction: None)

    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s

    def check() -> None:
        if cancelled is not None and cancelled():
            raise AvatarCancelled(f"preparation of {avatar_id!r} was cancelled")
        if deadline is not None and time.monotonic() > deadline:
            raise AvatarError(f"preparation took longer than {time_limit_s:g} s; "
                              "use a shorter clip or a smaller picture")

    avatars_dir.mkdir(parents=True, exist_ok=True)
    tmp = avatars_dir / f".tmp-{avatar_id}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _prepare(source, avatar_id, tmp, name or avatar_id, max_seconds, size, report, check, encoder,
                 mesh or shared_mesh())
        try:
            os.rename(tmp, final)  # atomic on one filesystem; fails if a non-empty folder is there
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise AvatarExists(f"an avatar with id {avatar_id!r} was created meanwhile") from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _prepare(source: Path, avatar_id: str, out: Path, name: str, max_seconds: float, size: int,
             report: Progress, check: Callable[[], None], encoder: Encoder | None, mesh: FaceMesh) -> None:
    try:
        _prepare_face(source, avatar_id, out, name, max_seconds, size, report, check, encoder, mesh)
    except FaceProblem as exc:
        raise AvatarError(f"{source.name}: {exc}") from None


def _prepare_face(source: Path, avatar_id: str, out: Path, name: str, max_seconds: float, size: int,
                  report: Progress, check: Callable[[], None], encoder: Encoder | None, mesh: FaceMesh) -> None:
    reader = _Reader(source, max_seconds)

    # Pass 1: small grey copies of every frame, for the detector.
    grays, scale = [], 1.0
    for rgb, fraction in reader.frames():
        check()
        if not grays:
            check_source(mesh, rgb)  # one face, big enough, facing the camera
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_SIDE / min(h, w))
        small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        # No equalizeHist: on the test photo it makes the cascade find a second, false face.
        grays.append(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        report("reading", fraction)
    src_h, src_w = h, w
    n = len(grays)

    detector = _FaceTracker(min_face=max(24, round(min(grays[0].shape) / 12)))
    found = np.full((n, 4), np.nan)
    for i, gray in enumerate(grays):
        check()
        box = detector.find(gray)
        if box is not None:
            found[i] = box / scale
        report("detecting", (i + 1) / n)
    hits = int(np.sum(~np.isnan(found[:, 0])))
    if hits * 2 < n or hits == 0:
        what = "no frontal face detected" if n == 1 else f"a face was detected in only {hits} " \
                                                        f"of {n} frames"
        raise AvatarError(f"no face found in {source.name}: {what}; use a well-lit, sharp "
                          "picture of one face looking at the camera")
    faces = _smooth(found)
    too_small(float(np.median(faces[:, 2] - faces[:, 0])))

    # One crop for the whole clip, around the median face.
    fx0, fy0, fx1, fy1 = np.median(faces, axis=0)
    side = min(round(CROP_FACES * (fx1 - fx0)), src_w, src_h)
    cx0 = int(np.clip(round((fx0 + fx1) / 2 - side / 2), 0, src_w - side))
    cy0 = int(np.clip(round((fy0 + fy1) / 2 - FACE_AT * side), 0, src_h - side))
    k = size / side
    faces = (faces - [cx0, cy0, cx0, cy0]) * k
    face_boxes = np.round(faces).astype(int)

    # Pass 2: crop, scale and store the frames, and the neural engines' face crops.
    (out / "frames").mkdir()
    (out / "neural" / "crops").mkdir(parents=True)
    boxes = crop_boxes(face_boxes, (size, size))
    crops = []
    eyes = None  # a photo's eye boxes, for blinks
    frame_points = FramePoints(mesh)
    for i, (rgb, _) in enumerate(reader.frames()):
        check()
        frame = cv2.resize(rgb[cy0:cy0 + side, cx0:cx0 + side], (size, size),
                           interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(out / "frames" / f"{i:05d}.jpg"), bgr,
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if i == 0:
            cv2.imwrite(str(out / "thumbnail.png"), _thumbnail(bgr, face_boxes[0]))
            eyes = find_eyes(bgr, face_boxes[0]) if reader.is_image else None
        frame_points.add(frame, face_boxes[i])
        crop = cut_crop(bgr, boxes[i])
        cv2.imwrite(str(out / "neural" / "crops" / f"{i:05d}.jpg"), crop,
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if encoder is not None:
            crops.append(crop)  # kept only for the encoder (a 20 s clip's crops are ~100 MB)
        report("writing", (i + 1) / n)
    landmarks, hidden = frame_points.finish()
    np.save(out / LANDMARKS_FILE, landmarks)

    # Mouth boxes share one size (the median face's), so one mask serves all; each is centred
    # on its frame's lips.
    fw = float(np.median(faces[:, 2] - faces[:, 0]))
    bw, bh = round(2 * BOX_HALF_WIDTH * fw), round((BOX_ABOVE + BOX_BELOW) * fw)
    bw, bh = min(bw, size), min(bh, size)
    mx = landmarks[:, MOUTH_CORNERS, 0].mean(axis=1)
    my = landmarks[:, (INNER_LIP_TOP, INNER_LIP_BOTTOM), 1].mean(axis=1)
    bx0 = np.clip(np.round(mx - bw / 2), 0, size - bw).astype(int)
    by0 = np.clip(np.round(my - BOX_ABOVE * fw), 0, size - bh).astype(int)
    mouth_boxes = np.stack([bx0, by0, bx0 + bw, by0 + bh], axis=1)
    mouth = [round(bw / 2), round(BOX_ABOVE * fw), round(MOUTH_HALF_WIDTH * fw)]
    cv2.imwrite(str(out / "mask.png"), mouth_mask(bw, bh))

    # The soft lower-face mask the engines blend their output through (crop coordinates).
    cv2.imwrite(str(out / "neural" / "mask.png"), np.rint(255 * lower_face_mask(CROP_SIZE)).astype(np.uint8))
    neural = {"boxes": boxes.tolist(), "crops": "neural/crops", "crop_size": CROP_SIZE, "mask": "neural/mask.png"}
    if encoder is not None:
        latents = []
        for start in range(0, n, 16):
            check()
            latents.append(encoder(np.stack(crops[start : start + 16])))
            report("encoding", min(n, start + 16) / n)
        np.save(out / LATENTS_FILE, np.concatenate(latents))
        neural["musetalk_latents"] = LATENTS_FILE

    manifest = {
        "format": FORMAT,
        "kind": "photo" if reader.is_image else "video",
        "id": avatar_id,
        "name": name,
        "size": [size, size],
        "fps": FPS,
        "n_frames": n,
        "frames": "frames",
        "source": source.name,
        "crop": [cx0, cy0, side],
        "face_boxes": face_boxes.tolist(),
        "mouth_boxes": mouth_boxes.tolist(),
        "mouth": mouth,
        "mask": "mask.png",
        "landmarks": LANDMARKS_FILE,
        "landmarks_hidden": hidden,
        "thumbnail": "thumbnail.png",
        "voice": None,
        "neural": neural,
    }
    if eyes is not None:
        manifest["eye_boxes"] = eyes
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def mouth_mask(w: int, h: int) -> np.ndarray:
    """uint8 (h, w) blend mask for the mouth box: 255 over lips and chin, fading to exactly 0
    at the box's edges so the warped mouth blends invisibly into the face."""
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, round(h * 0.52)), (round(w * 0.36), round(h * 0.40)), 0, 0, 360,
                1.0, -1)
    sigma = max(w, h) / 14
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    # Force the border ring to 0 (the blur leaves a small residue there).
    yy, xx = np.mgrid[0:h, 0:w]
    edge = np.minimum.reduce([xx, yy, w - 1 - xx, h - 1 - yy]).astype(np.float32)
    mask *= np.clip(edge / max(sigma, 1.0), 0, 1)
    return np.round(mask / mask.max() * 255).astype(np.uint8)


class _FaceTracker:
    """The main (largest) frontal face per frame, OpenCV's Haar cascade.

    A full-frame search costs ~50 ms at 480p; a face moves little between frames, so each
    frame is first searched only around the last face (TRACK_MARGIN face widths on each side)
    and for faces of about its size (TRACK_SIZES): ~10x less work. Only when that finds
    nothing is the whole frame searched again.
    """

    def __init__(self, min_face: int) -> None:
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self._min_face = min_face
        self._last: np.ndarray | None = None  # x0, y0, x1, y1 in the grey frame
        self.full_searches = 0

    def find(self, gray: np.ndarray) -> np.ndarray | None:
        box = self._near_last(gray) if self._last is not None else None
        if box is None:
            self.full_searches += 1
            box = self._largest(gray, (0, 0), self._min_face, None)
        self._last = box
        return box

    def _near_last(self, gray: np.ndarray) -> np.ndarray | None:
        x0, y0, x1, y1 = self._last
        w = x1 - x0
        h, wd = gray.shape
        rx0, ry0 = int(max(0, x0 - TRACK_MARGIN * w)), int(max(0, y0 - TRACK_MARGIN * w))
        rx1, ry1 = int(min(wd, x1 + TRACK_MARGIN * w)), int(min(h, y1 + TRACK_MARGIN * w))
        lo, hi = TRACK_SIZES
        return self._largest(gray[ry0:ry1, rx0:rx1], (rx0, ry0), max(self._min_face, int(lo * w)), int(hi * w))

    def _largest(self, gray: np.ndarray, origin: tuple[int, int], min_side: int, max_side: int | None):
        faces = self._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side),
            maxSize=(max_side, max_side) if max_side else None,
        )
        if not len(faces):
            return None
        x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
        return np.array([x + origin[0], y + origin[1], x + origin[0] + fw, y + origin[1] + fh], float)


def _smooth(boxes: np.ndarray) -> np.ndarray:
    """Fill frames without a detection from their neighbours, then average over a window."""
    n = len(boxes)
    idx = np.arange(n)
    ok = ~np.isnan(boxes[:, 0])
    filled = np.stack([np.interp(idx, idx[ok], boxes[ok, c]) for c in range(4)], axis=1)
    # A moving median drops one-frame false detections before the mean smooths the jitter.
    r = SMOOTH_FRAMES // 2
    padded = np.pad(filled, ((r, r), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, SMOOTH_FRAMES, axis=0)
    med = np.pad(np.median(windows, axis=2), ((r, r), (0, 0)), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(med, SMOOTH_FRAMES, axis=0).mean(axis=2)


def _thumbnail(bgr: np.ndarray, face: np.ndarray) -> np.ndarray:
    """128x128 picker picture: the face with some room around it."""
    size = bgr.shape[0]
    x0, y0, x1, y1 = face
    side = min(round(1.9 * (x1 - x0)), size)
    tx = int(np.clip((x0 + x1) // 2 - side // 2, 0, size - side))
    ty = int(np.clip((y0 + y1) // 2 - side // 2, 0, size - side))
    return cv2.resize(bgr[ty:ty + side, tx:tx + side], (128, 128), interpolation=cv2.INTER_AREA)


# What a source may be, decided from its content (FFmpeg's probe), never its name: a few
# image and video containers, and a size that bounds decoding memory and time (4K UHD fits).
IMAGE_CONTAINERS = {"png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe"}
VIDEO_CONTAINERS = {"mov", "mp4", "matroska", "webm", "avi", "gif"}
MAX_SOURCE_SIDE = 4096
MAX_SOURCE_PIXELS = 4096 * 2304


def probe_source(path: Path) -> bool:
    """Check `path` from its headers, before decoding a pixel; True for an image, False for a
    video. AvatarError names what is wrong: an unknown container, no video, too many pixels."""
    try:
        with av.open(str(path)) as c:
            formats = set(c.format.name.split(","))
            if not c.streams.video:
                raise AvatarError(f"{path.name} has no video stream")
            stream = c.streams.video[0]
            width, height = stream.width, stream.height
    except av.FFmpegError:
        raise AvatarError(f"{path.name} is not an image or video PyAV/OpenCV can read") from None
    if formats == {"image2"}:  # FFmpeg went by the file's name: its content is no image it knows
        raise AvatarError(f"{path.name} is not an image or video PyAV/OpenCV can read")
    if not formats & (IMAGE_CONTAINERS | VIDEO_CONTAINERS):
        raise AvatarError(f"{path.name} is {c.format.long_name or c.format.name}; use a PNG, JPEG, "
                          "WebP or BMP photo, or an MP4, MOV, WebM, MKV, AVI or GIF video")
    if max(width, height) > MAX_SOURCE_SIDE or width * height > MAX_SOURCE_PIXELS:
        raise AvatarError(f"{path.name} is {width}x{height}; the limit is {MAX_SOURCE_SIDE} pixels on the "
                          f"long side and {MAX_SOURCE_PIXELS / 1e6:.1f} megapixels: scale it down")
    return bool(formats & IMAGE_CONTAINERS)


class _Reader:
    """The source's frames as RGB uint8, sampled at 25 fps up to ``max_seconds``; can be read
    twice, so the full-size frames never all sit in memory at once."""

    def __init__(self, path: Path, max_seconds: float):
        self.path = path
        self.max_seconds = max_seconds
        self.is_image = probe_source(path)
        self._image = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB) if self.is_image else None
        if self.is_image and self._image is None:
            raise AvatarError(f"{path.name} is not an image PyAV/OpenCV can read")

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """(frame, fraction of the source read so far)."""
        if self.is_image:
            yield self._image, 1.0
            return
        step = 1 / FPS
        count = 0
        try:
            with av.open(str(self.path)) as c:
                stream = c.streams.video[0]
                duration = c.duration / 1e6 if c.duration else self.max_seconds
                end = min(duration, self.max_seconds)
                next_t, k = 0.0, 0
                for frame in c.decode(stream):
                    rate = float(stream.average_rate or FPS)
                    t = frame.time if frame.time is not None else k / rate
                    k += 1
                    rgb = None
                    # Repeat or drop source frames to land on the 25 fps grid.
                    while next_t <= t + 1e-6 and next_t < self.max_seconds - 1e-6:
                        rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
                        count += 1
                        next_t = count * step
                        yield rgb, min(next_t / end, 1.0) if end > 0 else 1.0
                    if next_t >= self.max_seconds - 1e-6:
                        break
        except av.FFmpegError as e:
            if count:
                raise AvatarError(f"{self.path.name}: cannot decode the video ({e})") from None
        if count == 0:
            raise AvatarError(f"{self.path.name} is not an image or video PyAV/OpenCV can read")
