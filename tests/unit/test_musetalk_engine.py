"""The MuseTalk backend on a prepared photo avatar with tiny random-weight models in the
official folder layout (no Ray): preparation stores the reference latents the engine uses,
frames change only the lower face, batching equals separate calls, and a streamed reply runs
through the session's chunking with the engine's context and look-ahead."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from serve_app.avatars import prepare_avatar
from serve_app.avatars.jobs import latent_encoder
from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME, LipSyncChunk
from serve_app.engines.lipsync.neural.musetalk import write_random_weights
from serve_app.engines.lipsync.neural.weights import WeightsError
from tests.unit.neural_support import TEST_DEVICE, stream_reply

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("muse") / "models"
    write_random_weights(folder, tiny=True, seed=0)
    return folder


@pytest.fixture(scope="module")
def avatars(tmp_path_factory, models) -> Path:
    root = tmp_path_factory.mktemp("muse-avatars")
    photo = root / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    stages = []
    prepare_avatar(photo, "astro", root / "avatars", encoder=latent_encoder("musetalk", {"models_dir": str(models)}),
                   progress=lambda stage, fraction: stages.append(stage))
    assert "encoding" in stages
    prepare_avatar(photo, "plain", root / "avatars")  # prepared without a MuseTalk model
    return root / "avatars"


@pytest.fixture(scope="module")
def engine(avatars, models):
    return create_lipsync_engine("musetalk", avatars_dir=avatars, models_dir=str(models), device=TEST_DEVICE)


def speech(frames: int, seed: int = 0) -> np.ndarray:
    t = np.arange(frames * SAMPLES_PER_FRAME) / 16_000
    phase = 2 * np.pi * np.cumsum(130 + 30 * np.sin(2 * np.pi * t + seed)) / 16_000
    return (0.3 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_preparation_stores_the_latents_the_engine_would_compute(avatars, engine):
    m = json.loads((avatars / "astro" / "manifest.json").read_text())
    stored = np.load(avatars / "astro" / m["neural"]["musetalk_latents"])
    assert stored.shape == (1, 8, 32, 32)
    assert "musetalk_latents" not in json.loads((avatars / "plain" / "manifest.json").read_text())["neural"]
    computed = engine.load("plain").extra["latents"]  # computed at load for the plain one
    np.testing.assert_allclose(engine.load("astro").extra["latents"], stored)
    # Computed from the stored (JPEG) crops rather than the in-memory ones: close, not equal.
    assert computed.shape == stored.shape
    assert np.corrcoef(computed.ravel(), stored.ravel())[0, 1] > 0.98


def test_talking_frames_change_only_the_lower_face(engine):
    frames = engine.render(LipSyncChunk("astro", first_frame=4, audio=speech(5)))
    assert frames.shape == (5, 512, 512, 3) and frames.dtype == np.uint8
    avatar = engine.load("astro")
    x0, y0, x1, y1 = avatar.boxes[0]
    for k, frame in enumerate(frames):
        diff = np.abs(frame.astype(int) - engine.idle_frame("astro", 4 + k)).max(axis=2) > 0
        assert diff[y0:y1, x0:x1].sum() > 0.1 * (x1 - x0) * (y1 - y0)
        diff[y0 + (y1 - y0) // 2 : y1, x0:x1] = False
        assert diff.sum() == 0, "pixels changed outside the lower half of the face box"


def test_one_batched_call_equals_separate_calls(engine):
    chunks = [LipSyncChunk("astro", first_frame=i, audio=speech(3, seed=i)) for i in range(2)]
    chunks.append(LipSyncChunk("plain", first_frame=0, audio=speech(2, seed=5), fade_out=2))
    avatars = [engine.load(c.avatar_id) for c in chunks]
    for chunk, avatar, frames in zip(chunks, avatars, engine.render_batch(chunks, avatars)):
        assert np.abs(frames.astype(int) - engine.render(chunk, avatar)).max() <= 1


def test_a_streamed_reply_renders_with_context_and_lookahead(engine):
    assert (engine.context_frames, engine.lookahead_frames) == (10, 4)
    _, chunks = stream_reply(engine, np.repeat(speech(17), 3), "astro")
    frames = engine.render_batch(chunks, [engine.load("astro")] * len(chunks))
    assert [len(f) for f in frames] == [5, 5, 5, 2]


def test_missing_models_are_reported_at_start(avatars, tmp_path):
    with pytest.raises(WeightsError, match=r"musetalk\.json.*TMElyralab/MuseTalk"):
        create_lipsync_engine("musetalk", avatars_dir=avatars, models_dir=str(tmp_path))
