"""A session on the Wav2Lip backend (the degraded test app's lip-sync): a photo avatar speaks
with model-generated lower-face frames while the rest of the picture stays the idle frame.
(The session sends each chunk with the engine's audio context and look-ahead; that chunked
rendering equals whole-reply rendering is shown in tests/unit/test_wav2lip_engine.py.)"""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from skimage import data as skdata

from serve_app.client import AvatarSession
from serve_app.config import PROJECT_ROOT
from tests.integration.support import admin, finished, png, upload

pytestmark = pytest.mark.integration


async def test_photo_avatar_speaks_through_wav2lip(http, degraded_url):
    base = degraded_url.removeprefix(str(http.base_url).rstrip("/"))
    avatar_id = f"neural-{uuid.uuid4().hex[:6]}"
    try:
        response = await upload(http, avatar_id, png(skdata.astronaut()), "image/png")
        job = await finished(http, response.json()["job_id"])
        assert job["state"] == "done", job
        session = await AvatarSession(degraded_url, avatar=avatar_id, keep_frames=True).start()
        await session.interrupt()
        await session.wait_until(lambda r: len(r.video) >= 10)
        idle = session.received.video[-1].frame.astype(int)
        n = len(session.received.video)
        turn_id = await session.say("Hello there, I am speaking through a neural network.")
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=120)
        assert end["interrupted"] is False
        frames = [v.frame.astype(int) for v in session.received.video[n:]]

        health = (await http.get(f"{base}/api/health")).json()
        assert health["lipsync_cache"]["avatars"].get(avatar_id, 0) > 0
        manifest = json.loads((PROJECT_ROOT / "avatars" / avatar_id / "manifest.json").read_text())
        x0, y0, x1, y1 = manifest["neural"]["boxes"][0]
        # The generated lower face: big changes in the lower half of the face box while
        # speaking; above the box (hair, helmet, background) only codec noise.
        # Outside the mouth box too: the weight-free engine would change only that box.
        region = np.zeros(idle.shape[:2], bool)
        region[(y0 + y1) // 2 + 8 : y1 - 8, x0 + 8 : x1 - 8] = True
        mx0, my0, mx1, my1 = manifest["mouth_boxes"][0]
        region[my0 - 4 : my1 + 4, mx0 - 4 : mx1 + 4] = False
        assert region.sum() > 300
        lower = [np.abs(f - idle).max(axis=2)[region].mean() for f in frames]
        above = [np.abs(f[: y0 - 10] - idle[: y0 - 10]).mean() for f in frames]
        assert max(lower) > 15, max(lower)
        assert max(above) < 4, max(above)
        await session.close()
    finally:
        await http.delete(f"/api/avatars/{avatar_id}", headers=admin())
