"""The LipSync deployment batches chunks from many sessions into one engine call.

A second app on the test cluster hosts a LipSync deployment with the Wav2Lip backend (random
weights in the official checkpoint layout) and a batching user_config; chunks sent at once
come back from shared batches, each equal to the same chunk rendered on its own; a new
user_config changes the batching of the running replica.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from serve_app.avatars import prepare_avatar
from serve_app.config import PROJECT_ROOT
from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME, LipSyncChunk

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(app_url, tmp_path_factory):
    import torch

    from serve_app.engines.lipsync.neural.wav2lip import Wav2Lip, save_official_checkpoint

    root = tmp_path_factory.mktemp("batching")
    photo = root / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    prepare_avatar(photo, "astro", root / "avatars")
    shutil.copytree(PROJECT_ROOT / "avatars" / "default", root / "avatars" / "default")
    torch.manual_seed(0)
    save_official_checkpoint(Wav2Lip("96"), root / "wav2lip.pth")
    return root


def deploy(root: Path, user_config: dict):
    from ray import serve

    from serve_app.deployments.lipsync import LipSyncDeployment
    from serve_app.local_cluster import run_app

    options = {"checkpoint": str(root / "wav2lip.pth"), "device": "cpu"}
    app = LipSyncDeployment.options(
        num_replicas=1, ray_actor_options={"num_cpus": 0}, user_config=user_config
    ).bind("wav2lip", options, root / "avatars")
    run_app(app, "batching", "/batching-test", timeout_s=120)
    return serve.get_app_handle("batching"), options


def speech(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames * SAMPLES_PER_FRAME) / 16_000
    return (0.3 * np.sin(2 * np.pi * (110 + 20 * seed) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


async def test_chunks_from_many_sessions_share_one_batch(setup):
    handle, options = deploy(setup, {"max_batch_size": 6, "batch_wait_timeout_s": 0.5})
    chunks = [LipSyncChunk("astro" if i % 3 else "default", first_frame=i, audio=speech(5, i))
              for i in range(6)]
    results = await asyncio.gather(*(
        handle.options(multiplexed_model_id=c.avatar_id).render.remote(c) for c in chunks))
    cache = await handle.cache.remote()
    assert cache["batching"] == {"max_batch_size": 6, "batch_wait_timeout_s": 0.5}
    assert max(cache["recent_batch_sizes"]) > 1, cache  # several sessions' chunks in one call
    assert sum(cache["recent_batch_sizes"]) == 6

    local = create_lipsync_engine("wav2lip", avatars_dir=setup / "avatars", **options)
    for chunk, frames in zip(chunks, results):
        assert frames.shape == (5, 512, 512, 3)
        assert np.abs(frames.astype(int) - local.render(chunk)).max() <= 1

    # A new user_config (through `reconfigure`) sets the batching: one chunk per call now. Here
    # `serve.run` of a rebuilt app replaces the replica; a declarative deploy (`serve deploy`)
    # that changes only user_config reconfigures the running one.
    handle, _ = deploy(setup, {"max_batch_size": 1, "batch_wait_timeout_s": 0.0})
    await asyncio.gather(*(
        handle.options(multiplexed_model_id=c.avatar_id).render.remote(c) for c in chunks[:4]))
    cache = await handle.cache.remote()
    assert cache["batching"]["max_batch_size"] == 1 and cache["recent_batch_sizes"][-4:] == [1, 1, 1, 1]

    with pytest.raises(Exception, match="max_batch_size"):
        deploy(setup, {"max_batch_size": 0})
    from ray import serve

    serve.delete("batching")
