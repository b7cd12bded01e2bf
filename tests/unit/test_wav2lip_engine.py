"""The Wav2Lip backend on a prepared photo avatar, with a random-weight checkpoint saved in the
official layout (no Ray): frames land in the avatar's lower face only, a reply rendered chunk
by chunk as the session streams it equals the reply rendered whole (the audio context and
look-ahead line up with the clock), and one batched call equals separate calls."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from serve_app.avatars import prepare_avatar
from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME, LipSyncChunk
from serve_app.engines.lipsync.neural.avatar import NeuralAvatar
from serve_app.engines.lipsync.neural.wav2lip import Wav2Lip, save_official_checkpoint
from serve_app.engines.lipsync.neural.weights import WeightsError
from tests.unit.neural_support import TEST_DEVICE, stream_reply

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def avatars(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("w2l")
    photo = root / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    folder = root / "avatars"
    prepare_avatar(photo, "astro", folder)
    shutil.copytree(REPO / "avatars" / "default", folder / "default")
    return folder


@pytest.fixture(scope="module")
def engine(avatars, tmp_path_factory):
    torch.manual_seed(0)
    model = Wav2Lip("96")
    for m in model.modules():  # trained-looking batch-norm statistics, so outputs vary
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    # At random init the face dominates and the audio barely moves the output; amplify the
    # audio path so a misaligned mel window would change the frames (as in a trained model).
    with torch.no_grad():
        for block in model.face_decoder_blocks:
            block[0].conv_block[1].weight.mul_(3)
        model.audio_encoder[-1].conv_block[1].weight.mul_(10)
        model.output_block[1].weight.mul_(10)
    path = tmp_path_factory.mktemp("weights") / "wav2lip_gan.pth"
    save_official_checkpoint(model, path)
    return create_lipsync_engine("wav2lip", avatars_dir=avatars, checkpoint=str(path), device=TEST_DEVICE)


def speech(frames: int, seed: int = 0) -> np.ndarray:
    """16 kHz voiced-like audio: a gliding pitch with harmonics, amplitude-modulated."""
    t = np.arange(frames * SAMPLES_PER_FRAME) / 16_000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.8 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / 16_000
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (0.3 * voice * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t + seed))).astype(np.float32)


def test_talking_frames_change_only_the_lower_face(engine, avatars):
    chunk = LipSyncChunk("astro", first_frame=7, audio=speech(6))
    frames = engine.render(chunk)
    assert frames.shape == (6, 512, 512, 3) and frames.dtype == np.uint8
    avatar = engine.load("astro")
    assert isinstance(avatar, NeuralAvatar) and avatar.crops.shape == (1, 96, 96, 3)
    x0, y0, x1, y1 = avatar.boxes[0]
    for k, frame in enumerate(frames):
        idle = engine.idle_frame("astro", 7 + k)
        diff = np.abs(frame.astype(int) - idle).max(axis=2) > 0
        assert diff[y0:y1, x0:x1].sum() > 0.1 * (x1 - x0) * (y1 - y0)  # the model's face is in
        diff[y0 + (y1 - y0) // 2 : y1, x0:x1] = False
        ys, xs = np.nonzero(diff)
        assert diff.sum() == 0, f"pixels changed outside the lower half of the face box {avatar.boxes[0]}: {ys.min()}..{ys.max()} {xs.min()}..{xs.max()}"
    assert not np.array_equal(frames[0], frames[3])  # different audio, different mouth


def test_sprite_avatars_fall_back_to_the_weight_free_engine(engine, avatars):
    chunk = LipSyncChunk("default", first_frame=0, audio=speech(3), visemes=["D", "D", "A"])
    viseme = create_lipsync_engine("viseme", avatars_dir=avatars)
    assert np.array_equal(engine.render(chunk), viseme.render(chunk))


def test_streamed_reply_equals_the_reply_rendered_whole(engine):
    """What the session does: ReplyAudio cuts the reply into 5-frame chunks and sends each
    with the context and look-ahead the engine asked for."""
    audio48 = np.repeat(speech(23), 3) * 0.9  # a 48 kHz stand-in for the TTS output
    parts, chunks = stream_reply(engine, audio48, "astro", clock_frame=100)
    assert [p.first for p in parts] == [0, 5, 10, 15, 20] and parts[-1].last
    streamed = np.concatenate([engine.render(c) for c in chunks])
    whole16 = np.concatenate([p.audio16 for p in parts])
    whole = engine.render(LipSyncChunk("astro", first_frame=100, audio=whole16))
    assert streamed.shape == whole.shape == (23, 512, 512, 3)
    assert np.abs(streamed.astype(int) - whole).max() <= 1


def test_one_batched_call_equals_separate_calls(engine):
    chunks = [LipSyncChunk("astro", first_frame=3 * i, audio=speech(4, seed=i), fade_in=2 * (i == 1))
              for i in range(3)] + [LipSyncChunk("default", first_frame=0, audio=speech(2))]
    avatars = [engine.load(c.avatar_id) for c in chunks]
    batched = engine.render_batch(chunks, avatars)
    for chunk, avatar, frames in zip(chunks, avatars, batched):
        assert np.abs(frames.astype(int) - engine.render(chunk, avatar)).max() <= 1


def test_a_wrong_checkpoint_is_reported_at_start(avatars, tmp_path):
    with pytest.raises(WeightsError, match=r"expected the file .*wav2lip\.pth"):
        create_lipsync_engine("wav2lip", avatars_dir=avatars, checkpoint=str(tmp_path / "wav2lip.pth"))
    torch.save({"state_dict": {"module.face_encoder.0.conv_block.0.weight": torch.zeros(1)}},
               tmp_path / "syncnet.pth")
    with pytest.raises(WeightsError, match="SyncNet|syncnet"):
        create_lipsync_engine("wav2lip", avatars_dir=avatars, checkpoint=str(tmp_path / "syncnet.pth"))
