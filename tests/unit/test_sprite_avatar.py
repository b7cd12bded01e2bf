"""The default sprite avatar, the sprite format and the viseme lip-sync engine (no Ray)."""
from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.lipsync.base import FPS, SAMPLES_PER_FRAME, VISEMES, LipSyncChunk
from serve_app.engines.lipsync.sprite import BLINK, SpriteAvatar
from serve_app.engines.lipsync.viseme_engine import VisemeLipSyncEngine, smooth_visemes

REPO = Path(__file__).resolve().parents[2]
AVATARS = REPO / "avatars"
DEFAULT = AVATARS / "default"


@pytest.fixture(scope="module")
def ava() -> SpriteAvatar:
    return SpriteAvatar(DEFAULT)


@pytest.fixture(scope="module")
def engine() -> VisemeLipSyncEngine:
    return VisemeLipSyncEngine(AVATARS)


def copy_avatar(tmp_path: Path, name: str = "mine", edit=None) -> Path:
    """A copy of the default avatar under tmp_path/avatars/<name>, its manifest edited."""
    folder = tmp_path / "avatars" / name
    shutil.copytree(DEFAULT, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["id"] = name
    if edit:
        edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def outside(mask: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = mask.copy()
    out[y0:y1, x0:x1] = False
    return out


# ---- the shipped avatar ----

def test_default_avatar_is_complete(ava):
    w, h = ava.size
    assert min(w, h) >= 384
    assert ava.name == "Ava"
    frame = ava.idle_frame(0)
    assert frame.shape == (h, w, 3) and frame.dtype == np.uint8
    assert frame.std() > 20  # a picture, not a flat fill
    assert ava.thumbnail_path is not None and ava.thumbnail_path.is_file()
    total = sum(p.stat().st_size for p in DEFAULT.iterdir())
    assert total < 600_000


def test_every_viseme_draws_a_different_mouth(ava):
    for index in (0, 37):
        box = ava.mouth_box(index)
        x0, y0, x1, y1 = box
        frames = {v: ava.frame(index, v)[y0:y1, x0:x1] for v in VISEMES}
        for a, b in itertools.combinations(VISEMES, 2):
            assert changed(frames[a], frames[b]).sum() > 20, f"{a} and {b} look the same"


def test_talking_differs_from_idle_only_inside_the_mouth_box(ava):
    w, h = ava.size
    blink = next(i for i in range(FPS * 10) if ava.eyes_at(i) == "closed")
    for index in (0, 13, 50, 99, blink, 12_345):
        box = ava.mouth_box(index)
        x0, y0, x1, y1 = box
        assert (x1 - x0) * (y1 - y0) < 0.05 * w * h  # a mouth, not the whole frame
        idle = ava.idle_frame(index)
        for v in VISEMES:
            diff = changed(ava.frame(index, v), idle)
            assert not outside(diff, box).any(), f"viseme {v} at frame {index} leaks out of {box}"
            if v != "X":
                assert diff.sum() > 50


def test_mouth_box_follows_the_motion(ava):
    boxes = {ava.mouth_box(i) for i in range(0, 200, 10)}
    assert len(boxes) > 1


def test_frames_are_new_writable_arrays(ava):
    a, b = ava.frame(3, "D"), ava.frame(3, "D")
    assert a is not b and a.flags.writeable
    a[:] = 0
    assert b.any()
    with pytest.raises(ValueError, match="unknown viseme"):
        ava.frame(3, "Q")


def test_blinks_happen_and_close_the_eyes(ava, tmp_path):
    states = [ava.eyes_at(i) for i in range(FPS * 60)]
    starts = [i for i, s in enumerate(states) if s == "half" and (i == 0 or states[i - 1] is None)]
    assert len(starts) >= 10
    for s in starts:
        assert tuple(states[s:s + len(BLINK)]) == BLINK
    gaps = np.diff(starts) / FPS
    assert gaps.min() >= 2.5 - 1e-9 and gaps.max() <= 5.5 + 1e-9

    # the same avatar without eye sprites renders the same frame with the eyes open
    open_eyed = SpriteAvatar(copy_avatar(tmp_path, edit=lambda m: m.pop("eyes")))
    assert open_eyed.eyes_at(starts[0] + 1) is None
    closed = starts[0] + 1
    diff = changed(ava.idle_frame(closed), open_eyed.idle_frame(closed))
    ys, xs = np.nonzero(diff)
    assert len(ys) > 200  # the eyes visibly shut
    assert ys.max() < ava.mouth_box(closed)[1]  # and only the eyes changed, above the mouth


def test_blinks_and_motion_are_deterministic_across_processes(ava):
    code = ("import hashlib; from serve_app.engines.lipsync.sprite import SpriteAvatar; "
            "a = SpriteAvatar('avatars/default'); "
            "print([a.eyes_at(i) for i in range(300)]); "
            "print(hashlib.sha256(a.frame(1234, 'D').tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == str([ava.eyes_at(i) for i in range(300)])
    assert out[1] == hashlib.sha256(ava.frame(1234, "D").tobytes()).hexdigest()


def test_idle_motion_exists_but_is_small(ava):
    assert ava.eyes_at(0) is None and ava.eyes_at(50) is None
    a, b = ava.idle_frame(0).astype(int), ava.idle_frame(50).astype(int)
    assert changed(a, b).sum() > 1000  # the figure moved
    assert np.abs(a - b).mean() < 8  # but only slightly
    # the smooth background hides the warp: corners stay put
    assert np.abs(a[:40, :40] - b[:40, :40]).max() <= 2
    assert np.array_equal(ava.idle_frame(50), b)


# ---- the format's validation ----

def _drop_mouth_h(m):
    del m["mouths"]["H"]


def _missing_file(m):
    m["mouths"]["D"] = "mouth_missing.png"


def _anchor_outside(m):
    m["mouth_anchor"] = [600, 10]


def _sprite_off_edge(m):
    m["mouth_anchor"] = [3, 3]


def _wrong_size(m):
    m["size"] = [256, 256]


def _wrong_kind(m):
    m["kind"] = "video"


@pytest.mark.parametrize("edit, problem", [
    (_drop_mouth_h, r"manifest\.json: 'mouths' lacks viseme\(s\) H"),
    (_missing_file, r"mouth_missing\.png: file not found"),
    (_anchor_outside, r"'mouth_anchor' \[600, 10\] lies outside the 512x512 base image"),
    (_sprite_off_edge, r"mouth_A\.png: a \d+x\d+ sprite centred at \[3, 3\] does not fit"),
    (_wrong_size, r"'size' is \[256, 256\] but base\.png is 512x512"),
    (_wrong_kind, r"'kind' must be \"sprite\""),
])
def test_broken_manifests_are_rejected_with_a_clear_message(tmp_path, edit, problem):
    folder = copy_avatar(tmp_path, edit=edit)
    with pytest.raises(ValueError, match=problem):
        SpriteAvatar(folder)


def test_missing_manifest_and_bad_json(tmp_path):
    folder = copy_avatar(tmp_path)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest\.json: not valid JSON"):
        SpriteAvatar(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"manifest\.json: file not found"):
        SpriteAvatar(folder)


# ---- the engine ----

def chunk(n: int, visemes=None, first_frame: int = 0, avatar_id: str = "default") -> LipSyncChunk:
    audio = np.zeros(n * SAMPLES_PER_FRAME, np.float32)
    return LipSyncChunk(avatar_id, first_frame, audio, visemes)


def test_render_with_explicit_visemes(engine, ava):
    visemes = ["X", "A", "C", "D", "D", "F", "G", "X"]
    frames = engine.render(chunk(8, visemes, first_frame=100))
    w, h = engine.frame_size("default")
    assert frames.shape == (8, h, w, 3) and frames.dtype == np.uint8
    for k, v in enumerate(visemes):
        assert np.array_equal(frames[k], ava.frame(100 + k, v))
    assert np.array_equal(engine.idle_frame("default", 100), frames[0])


def test_render_pads_missing_visemes_with_rest(engine, ava):
    frames = engine.render(chunk(3, ["D"]))
    assert np.array_equal(frames[2], ava.idle_frame(2))
    assert engine.render(chunk(0, [])).shape == (0, 512, 512, 3)


def test_render_derives_visemes_from_audio_when_missing(engine, ava, monkeypatch):
    calls = []

    def visemes_from_audio(audio, n_frames):
        calls.append((len(audio), n_frames))
        return ["D"] * n_frames

    fake = types.ModuleType("serve_app.engines.lipsync.visemes")
    fake.visemes_from_audio = visemes_from_audio
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    frames = engine.render(chunk(4, None, first_frame=7))
    assert calls == [(4 * SAMPLES_PER_FRAME, 4)]
    assert np.array_equal(frames[1], ava.frame(8, "D"))


def test_smoothing_removes_single_frame_flicker_but_keeps_closures():
    assert smooth_visemes(["C", "D", "C"]) == ["C", "C", "C"]
    assert smooth_visemes(["C", "A", "C"]) == ["C", "A", "C"]  # P/B/M closures stay visible
    assert smooth_visemes(["C", "D", "D", "C"]) == ["C", "D", "D", "C"]
    assert smooth_visemes(["D", "C", "E"]) == ["D", "C", "E"]
    assert smooth_visemes(["B"]) == ["B"]


def test_unknown_and_bad_avatar_ids(engine):
    with pytest.raises(KeyError, match="available: .*default"):
        engine.frame_size("nobody")
    for bad in ("../default", "a/b", "de.fault", "", "a\\b"):
        with pytest.raises(ValueError, match="invalid avatar id"):
            engine.frame_size(bad)


def test_registry(engine):
    e = create_lipsync_engine("viseme", avatars_dir=AVATARS)
    assert isinstance(e, VisemeLipSyncEngine)
    assert e.frame_size("default") == (512, 512)
    with pytest.raises(ValueError, match=r"known engines: \['musetalk', 'viseme', 'wav2lip'\]"):
        create_lipsync_engine("nope")


def test_reply_edges_crossfade_with_the_idle_picture(engine):
    """fade_in / fade_out blend the talking mouth with the idle one, only inside the mouth box."""
    n = 6
    audio = np.zeros(n * 640, np.float32)
    sharp = engine.render(LipSyncChunk("default", 100, audio, ["D"] * n))
    faded = engine.render(LipSyncChunk("default", 100, audio, ["D"] * n, fade_in=2, fade_out=2))
    avatar = engine.avatar("default")

    def mouth_delta(frames, k):
        x0, y0, x1, y1 = avatar.mouth_box(100 + k)
        idle = avatar.idle_frame(100 + k)[y0:y1, x0:x1].astype(int)
        return np.abs(frames[k][y0:y1, x0:x1].astype(int) - idle).mean()

    full = [mouth_delta(sharp, k) for k in range(n)]
    eased = [mouth_delta(faded, k) for k in range(n)]
    # 1/3, 2/3 of the way in; fully open in the middle; 2/3, 1/3 on the way out.
    assert eased[0] < eased[1] < eased[2] == pytest.approx(full[2])
    assert eased[3] == pytest.approx(full[3]) and eased[3] > eased[4] > eased[5]
    assert eased[0] == pytest.approx(full[0] / 3, rel=0.1)
    for k in range(n):  # nothing outside the mouth box changes
        x0, y0, x1, y1 = avatar.mouth_box(100 + k)
        outside = faded[k].copy()
        outside[y0:y1, x0:x1] = sharp[k][y0:y1, x0:x1]
        assert np.array_equal(outside, sharp[k])
