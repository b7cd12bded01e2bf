"""Fixtures shared by the integration tests (the cluster itself: tests/conftest.py)."""
from __future__ import annotations

import httpx
import pytest

from serve_app.client import AvatarSession


@pytest.fixture
async def http(app_url):
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
async def bystander(app_url):
    """A connected session that must keep streaming through everything a test module does."""
    session = await AvatarSession(app_url).start()
    await session.interrupt()
    yield session
    await session.close()


@pytest.fixture(scope="session")
async def degraded_url(app_url) -> str:
    """tests/fixtures/degraded.yaml beside the main app: ASR and LLM point at a closed port,
    avatars may be prepared from a server-side folder, and lip-sync is Wav2Lip (random
    weights saved in the official layout, with trained-looking batch-norm statistics).

    Built and deployed in a thread: this takes tens of seconds, and a blocked event loop
    would starve the peers of the sessions already open in it (a bystander's ICE consent
    checks go unanswered and the server rightly ends its session)."""
    import asyncio

    from ray import serve

    await asyncio.to_thread(_deploy_degraded)
    yield f"{app_url}/degraded"
    await asyncio.to_thread(serve.delete, "degraded")


def _deploy_degraded() -> None:
    from pathlib import Path

    import torch

    from serve_app.app import build_app
    from serve_app.engines.lipsync.neural.wav2lip import Wav2Lip, save_official_checkpoint
    from serve_app.local_cluster import run_app

    torch.manual_seed(0)
    model = Wav2Lip("96")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    Path("/tmp/dh-test-models").mkdir(exist_ok=True)
    save_official_checkpoint(model, Path("/tmp/dh-test-models/wav2lip.pth"))
    run_app(build_app({"profile": "tests/fixtures/degraded.yaml"}), "degraded", "/degraded", timeout_s=120)
